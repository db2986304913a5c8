#!/usr/bin/env bash
# Creates (or reuses) a virtual environment cached by the hash of its inputs and links it into the project.
# Usage: tools/ensure-venv.sh LINK PYTHON LOCKFILE
# The venv lives in $BANKBOT_CACHE_DIR (default ~/.cache/bankbot) so fresh clones (CI) reuse it while the lock
# file, the interpreter and this script are unchanged; LINK (.venv or .venv-rasa) is a symlink to it.
set -euo pipefail
link=$1 python=$2 lock=$3
[ -x "$python" ] || { echo "ensure-venv: interpreter $python not found (pyenv ships it on this machine)" >&2; exit 1; }
cache_root=${BANKBOT_CACHE_DIR:-$HOME/.cache/bankbot}/venvs
key=$( { "$python" --version 2>&1; cat "$lock" "$0"; } | sha256sum | cut -c1-16)
target="$cache_root/$(basename "$link" | tr -d .)-$key"
mkdir -p "$cache_root"
exec 9>"$target.lock"
flock 9
if [ ! -f "$target/.complete" ]; then
  echo "ensure-venv: building $link from $lock (key $key)"
  rm -rf "$target"
  "$python" -m venv "$target"
  quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; return "${PIPESTATUS[0]}"; }
  quiet "$target/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip==24.0"
  # The lock file is a full freeze: --no-deps installs exactly it and never backtracks.
  quiet "$target/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$lock"
  "$target/bin/python" -m pip check || true
  touch "$target/.complete"
fi
if [ "$(readlink "$link" 2>/dev/null)" != "$target" ]; then
  rm -rf "$link"
  ln -s "$target" "$link"
fi
