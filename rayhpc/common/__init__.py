"""What every part of rayhpc shares and none owns: the one-line error the user sees
(`user_error`) and the YAML data files (`yaml_files`)."""
