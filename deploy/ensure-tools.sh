#!/usr/bin/env bash
# Installs the Debian tools the test suite drives for real (promtool from the `prometheus` package),
# when they are missing. apt is available on the project's machines; elsewhere install them yourself.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing tools: ${need[*]} (install the Debian packages)" >&2
    exit 1
  fi
fi
