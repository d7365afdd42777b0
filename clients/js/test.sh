#!/usr/bin/env bash
# CI entry for the JS client: builds `wsedge` (release; the compare step needs it anyway),
# installs the devDependencies from package-lock.json, runs `node --test` against the real
# server (the demo, the demo over the SSE fallback, a plain EventSource and the bench report
# page in headless Chromium included) and prints a tally. `bash clients/js/test.sh` from any directory. WSEDGE_REQUIRE_BROWSER=1 (set by .ci/run) installs
# Debian's chromium when missing and makes a missing browser a failure instead of a skip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

command -v node >/dev/null 2>&1 || { echo "js client: node not found (Node 20+ needed)" >&2; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$major" -ge 20 ]] || { echo "js client: Node $(node --version) is too old (20+ needed)" >&2; exit 1; }

if [[ -z "${WSEDGE_BIN:-}" ]]; then
    t0=$SECONDS
    (cd "$root" && cargo build --release --bin wsedge)
    echo "js client: cargo build --release --bin wsedge in $((SECONDS - t0)) s"
    export WSEDGE_BIN="$root/target/release/wsedge"
fi

# The browser test (test/browser.test.js) drives Debian's `chromium` with playwright-core.
# In CI it is installed when missing, like redis-server in .ci/run; elsewhere the test skips
# with the reason rather than install a browser unasked.
find_chromium() {
    local candidate
    for candidate in "${WSEDGE_CHROMIUM:-}" chromium chromium-browser google-chrome; do
        [[ -n "$candidate" ]] && command -v "$candidate" && return 0
    done
    return 1
}
if [[ "${WSEDGE_REQUIRE_BROWSER:-}" == 1 ]] && ! find_chromium >/dev/null; then
    sudo=()
    [[ $EUID -eq 0 ]] || sudo=(sudo)
    t0=$SECONDS
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
    echo "js client: installed chromium in $((SECONDS - t0)) s"
fi
if browser="$(find_chromium)"; then
    echo "js client: browser $("$browser" --version 2>/dev/null || echo "$browser")"
else
    echo "js client: no chromium: the browser test will skip (WSEDGE_REQUIRE_BROWSER=1 installs it)"
fi

cd "$here"
t0=$SECONDS
npm ci --no-audit --no-fund --loglevel=error
echo "js client: npm ci in $((SECONDS - t0)) s (node $(node --version), npm $(npm --version))"

t0=$SECONDS
npx --no-install tsc -p test/types
echo "js client: index.d.ts types the examples and every frame (tsc --strict) in $((SECONDS - t0)) s"

t0=$SECONDS
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
rc=0
# Two files at a time (each starts its own server): the auth file mostly waits for tokens to
# expire, the others run beside it.
node --test --test-concurrency=2 --test-reporter=spec test/ 2>&1 | tee "$out" || rc=$?
pass="$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$out")"
fail="$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$out")"
size="$(wc -c <src/index.js)"
gz="$(npx --no-install esbuild --minify --format=esm --log-level=error src/index.js | gzip -9 -c | wc -c)"
echo "js client: ${pass:-?} passed, ${fail:-?} failed in $((SECONDS - t0)) s; src/index.js $size bytes, $gz minified+gzipped"
exit "$rc"
