#!/usr/bin/env bash
# Runs a command with what the console tests need: Debian's chromium and chromium-driver (a real
# headless browser driven over WebDriver) and promtool (Debian's prometheus package), installed
# with apt when missing (as root). Sets CONSOLE_REQUIRE_BROWSER so those tests fail, rather than
# skip, when something is still missing.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "with-browser: installing ${missing[*]}" >&2
    apt-get update -qq >/dev/null || true
    # The prometheus package would start a server as a service; only its promtool is wanted.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "with-browser: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
  fi
fi
export CONSOLE_REQUIRE_BROWSER=1 CHROMIUM=${CHROMIUM:-/usr/bin/chromium} CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
exec "$@"
