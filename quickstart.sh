#!/usr/bin/env bash
# One command from a fresh checkout to a finished run: makes sure a Docker engine with compose
# is reachable (bin/engine: on Debian/Ubuntu it installs and starts one, asking first on a
# terminal; RAYHPC_INSTALL_ENGINE=1 says yes without asking), installs the project into .venv,
# builds the image on first use (on a stand-in base where rayproject/ray cannot be pulled), then
# runs 1 head + 2 workers in containers with the hello example. Extra arguments go to
# `invoke launch` (`--driver CMD` runs another driver; `--interactive` keeps the cluster up).
set -euo pipefail
here="$(dirname "$0")"
host="$("$here/bin/engine" --quiet)" || exit $?
if [ -n "$host" ]; then export DOCKER_HOST="$host"; fi  # a rootless engine
bin="$("$here/bin/venv")"
# The hello example unless a driver is given (a launch without any driver is interactive).
export RAYHPC_DRIVER="${RAYHPC_DRIVER:-python examples/hello_nodes.py --ray-address={address}}"
exec "$bin/invoke" -r "$here" launch --site local "$@"
