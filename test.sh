#!/usr/bin/env bash
# The test command: installs the project and its test tools into .venv, then `invoke test`
# (ruff + pytest). Set REQUIRE_DOCKER=1 to make tests that need a Docker engine fail, not skip.
set -euo pipefail
bin="$("$(dirname "$0")/bin/venv")"
exec "$bin/invoke" -r "$(dirname "$0")" test "$@"
