#!/usr/bin/env bash
# Installs the Debian tools the test suite drives for real, when they are missing:
#   promtool + prometheus  (package `prometheus`): check config/rules, rule unit tests, and a real
#                          server that scrapes an embedded run and evaluates every dashboard/alert query;
#   amtool                 (package `prometheus-alertmanager`): check the Alertmanager config;
#   chromium + chromedriver (packages `chromium`, `chromium-driver`) and a CJK font
#                          (`fonts-wqy-microhei`): the inspector pages' end-to-end test in headless Chromium;
#                          the same font is embedded in the PDF case file (monitor inspect --pdf);
#   pdftotext + pdfinfo    (package `poppler-utils`): the PDF case file's test reads it back as a reader would.
# apt is available on the project's machines; elsewhere install them yourself.
set -euo pipefail
need=()
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
{ command -v pdftotext >/dev/null 2>&1 && command -v pdfinfo >/dev/null 2>&1; } || need+=(poppler-utils)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    # policy-rc.d: never start the packaged daemons (no init system here; tests start their own)
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing tools: ${need[*]} (install the Debian packages)" >&2
    exit 1
  fi
fi
