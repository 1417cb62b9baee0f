"""Runs already launched: find them (`run`), stop them (`stop`), submit Ray jobs to them
(`submit`), read their output (`logs`); `jobs` is the client of Ray's job API they use."""
