#!/usr/bin/env bash
# One command from a fresh checkout to a finished run: installs the project into .venv, builds the
# image on first use (on a stand-in base where rayproject/ray cannot be pulled), then runs
# 1 head + 2 workers in containers with the hello example. Extra arguments go to `invoke launch`.
set -euo pipefail
bin="$("$(dirname "$0")/bin/venv")"
exec "$bin/invoke" -r "$(dirname "$0")" launch --site local "$@"
