#!/usr/bin/env bash
# A PNG of a `relearnbench report` page through headless Chromium (docs/report.md's screenshot; the slow test
# in tests/core/test_report.py runs this script too):
#   benchmarks/screenshot.sh runs/RUN/report/index.html report.png
# CHROMIUM=path picks the browser (default: chromium, chromium-browser or google-chrome on PATH);
# WINDOW=WIDTH,HEIGHT the page size (default 1280,2000: a leaderboard, curves and the first image sheets).
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 REPORT_HTML OUT_PNG" >&2
    exit 2
fi
[ -f "$1" ] || { echo "$0: no such file: $1" >&2; exit 1; }
html=$(realpath "$1")
png=$(realpath -m "$2")
browser=${CHROMIUM:-}
for name in chromium chromium-browser google-chrome; do
    [ -n "$browser" ] && break
    browser=$(command -v "$name" || true)
done
[ -n "$browser" ] || { echo "$0: no Chromium on PATH (set CHROMIUM=path)" >&2; exit 1; }
# a throwaway profile, so that a browser already open on the default one cannot take the job over
profile=$(mktemp -d)
log="$profile.log"
trap 'rm -rf "$profile" "$log"' EXIT
rm -f "$png"
if ! "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
        --window-size="${WINDOW:-1280,2000}" --screenshot="$png" "file://$html" >"$log" 2>&1 || [ ! -s "$png" ]; then
    cat "$log" >&2  # Chromium's own messages (its D-Bus complaints are harmless) only when it failed
    echo "$0: Chromium wrote no screenshot" >&2
    exit 1
fi
echo "$png"
