#!/usr/bin/env bash
# Prints the path of the `cellplane` binary of the previous release (the one the README says can be
# upgraded from), building it from its commit the first time: the upgrade-in-place test
# (operator/tests/upgrade.rs) runs it mid-flight and hands its journal to the current binary.
# Built without the cloud SDKs (the test uses sim cells) and without debug info; cached under
# ~/.cache/cellplane/releases/VERSION-COMMIT.
set -euo pipefail

VERSION=0.1.0
COMMIT=52d0128f2505e064ea5b8196e5710f22634304b6

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/cellplane/releases/$VERSION-$COMMIT
binary=$cache/cellplane
mkdir -p "$cache"
exec 9>"$cache.lock"
flock 9
if [[ ! -x $binary ]]; then
  echo "building cellplane $VERSION from commit $COMMIT (once)" >&2
  rm -rf "$cache/src" "$cache/target"
  mkdir -p "$cache/src"
  git -C "$repo" archive "$COMMIT" | tar -x -C "$cache/src"
  (cd "$cache/src" && CARGO_TARGET_DIR=$cache/target CARGO_PROFILE_DEV_DEBUG=false \
    cargo build --locked --quiet -p cellplane --no-default-features >&2)
  cp "$cache/target/debug/cellplane" "$binary.new"
  mv "$binary.new" "$binary"
  rm -rf "$cache/src" "$cache/target"
fi
echo "$binary"
