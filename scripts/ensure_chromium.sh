#!/usr/bin/env bash
# The browser tests (tests/browser) drive Debian's Chromium at /usr/bin/chromium through the
# Python playwright package, which cannot download a browser of its own here. Install it when
# it is missing (as root, with apt-get); anywhere else say what to install and fail.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's chromium for the browser tests..." >&2
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
  [ -x /usr/bin/chromium ] && exit 0
fi
echo "The browser tests need Chromium at /usr/bin/chromium (Debian: apt-get install chromium)." >&2
exit 1
