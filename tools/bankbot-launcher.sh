#!/usr/bin/env bash
# The `bankbot` command in .venv: runs the CLI of the project checkout at or above the current directory
# (the venv itself is shared between checkouts through the cache, so it cannot point at one of them).
d=$PWD
while [ "$d" != / ] && [ ! -f "$d/bankbot/cli.py" ]; do d=$(dirname "$d"); done
[ -f "$d/bankbot/cli.py" ] || { echo "bankbot: run me inside the project checkout" >&2; exit 2; }
PYTHONPATH="$d${PYTHONPATH:+:$PYTHONPATH}" exec "$(dirname "$0")/python" -m bankbot "$@"
