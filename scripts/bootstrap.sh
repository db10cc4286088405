#!/usr/bin/env bash
# Create or refresh .venv and install xrd-agent with everything the demo and the tests need.
# xylib-py builds from source: it needs swig and the Boost headers (libboost-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "xrd-agent needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1))." >&2
  exit 1
fi

missing=()
command -v swig >/dev/null 2>&1 || missing+=(swig)
[ -e /usr/include/boost/version.hpp ] || missing+=(libboost-dev)
# The review page's browser test drives Debian's Chromium with Playwright (never `playwright install`);
# as root it is installed with the rest, otherwise that one test is skipped.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then missing+=(chromium); else echo "note: no /usr/bin/chromium (apt-get install chromium): the browser test will be skipped" >&2; fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing system packages (xylib-py build, browser test): ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "xylib-py needs ${missing[*]} to build. Install them first, for example:" >&2
    echo "  sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q -e ".[agent,dev,eval,library]"
