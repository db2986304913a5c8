#!/usr/bin/env bash
# Installs (or reuses) the npm dependencies of DIR, cached by the hash of its package-lock.json, and links them in.
# Usage: tools/ensure-node-modules.sh DIR
# The packages live in $BANKBOT_CACHE_DIR (default ~/.cache/bankbot)/node/<key> so fresh clones (CI) reuse them
# while the lock file is unchanged; DIR/node_modules is a symlink to that cache entry's node_modules.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
lock="$dir/package-lock.json"
[ -f "$dir/package.json" ] && [ -f "$lock" ] || { echo "ensure-node-modules: $dir lacks package.json or package-lock.json" >&2; exit 1; }
command -v npm >/dev/null || { echo "ensure-node-modules: npm not found (Debian's nodejs/npm packages provide it)" >&2; exit 1; }
cache_root=${BANKBOT_CACHE_DIR:-$HOME/.cache/bankbot}/node
key=$(sha256sum "$lock" | cut -c1-16)
target="$cache_root/$key"
mkdir -p "$cache_root"
exec 9>"$target.lock"
flock 9
if [ ! -f "$target/.complete" ]; then
  echo "ensure-node-modules: installing $lock (key $key)" >&2
  rm -rf "$target"
  mkdir -p "$target"
  cp "$dir/package.json" "$lock" "$target/"
  # npm ci installs exactly the lock file and fails rather than resolve anything anew.
  (cd "$target" && npm ci --no-audit --no-fund --loglevel=error >&2)
  touch "$target/.complete"
fi
link="$dir/node_modules"
if [ "$(readlink "$link" 2>/dev/null)" != "$target/node_modules" ]; then
  rm -rf "$link"
  ln -s "$target/node_modules" "$link"
fi
