#!/usr/bin/env bash
# Renders DIR/report.html (written by `epwa eval`) in headless Chromium and checks that every chart
# is present as an <svg> in the rendered DOM: ROC per mode, z histograms, TPR vs attack,
# perplexity vs delta, and the token view. Writes DIR/report.png (the screenshot) and
# DIR/report.dom.html (the DOM after rendering).
# Usage: scripts/check_report.sh DIR        Exit: 0 ok, 1 a check failed, 2 usage, 77 no chromium.
set -euo pipefail

dir=${1:-}
if [[ -z "$dir" || ! -f "$dir/report.html" ]]; then
  echo "usage: $0 DIR   (DIR/report.html must exist)" >&2
  exit 2
fi
browser=${CHROMIUM:-}
if [[ -z "$browser" ]]; then
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
  done
fi
if [[ -z "$browser" ]]; then
  echo "check_report: no chromium found (set CHROMIUM=...)" >&2
  exit 77
fi

url="file://$(cd "$dir" && pwd)/report.html"
png="$dir/report.png"
dom="$dir/report.dom.html"
# A private profile so that parallel runs and an open browser do not collide.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --user-data-dir="$profile" --no-first-run
       --disable-extensions --hide-scrollbars)

rm -f "$png"
timeout 120 "$browser" "${flags[@]}" --window-size=1280,6000 --screenshot="$png" "$url" \
  >/dev/null 2>&1 || true
timeout 120 "$browser" "${flags[@]}" --dump-dom "$url" >"$dom" 2>/dev/null || true

fail=0
if [[ ! -s "$png" ]]; then
  echo "FAIL: no screenshot written ($png)"
  fail=1
else
  echo "ok: screenshot $png ($(stat -c %s "$png") bytes)"
fi
if ! grep -q "</html>" "$dom"; then
  echo "FAIL: the DOM dump is empty or truncated ($dom)"
  exit 1
fi
# Each chart: an <svg ... id="ID" ...> element in the rendered DOM.
for id in roc-gsg roc-ewp zhist-gsg zhist-ewp attacks-gsg attacks-ewp ppl-delta; do
  if grep -Eq "<svg[^>]*id=\"$id\"" "$dom"; then
    echo "ok: chart $id"
  else
    echo "FAIL: chart $id missing from the DOM"
    fail=1
  fi
done
if grep -Eq "<div[^>]*id=\"tokens\"" "$dom" && grep -q 'class="g"' "$dom"; then
  echo "ok: token view (green tokens present)"
else
  echo "FAIL: token view missing or without green tokens"
  fail=1
fi
exit $fail
