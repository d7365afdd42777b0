#!/usr/bin/env bash
# Builds the benchmark peers (never part of the wsedge build):
#   rust/  tokio-tungstenite and fastwebsockets servers, cargo build --release --locked
#   node/  Node `ws` servers, npm ci (exact versions from package-lock.json)
# Idempotent: a second run rebuilds nothing that is up to date.
# Usage: benches/peers/build.sh [--rust-only | --node-only]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
do_rust=1
do_node=1
case "${1:-}" in
  --rust-only) do_node=0 ;;
  --node-only) do_rust=0 ;;
  "") ;;
  *) echo "usage: $0 [--rust-only | --node-only]" >&2; exit 2 ;;
esac

rust_bins=(tokio-tungstenite-echo tokio-tungstenite-broadcast fastwebsockets-echo fastwebsockets-broadcast)

if [[ $do_rust == 1 ]]; then
  echo "== rust peers (cargo build --release --locked)"
  # Own target dir, whatever CARGO_TARGET_DIR the caller has set.
  CARGO_TARGET_DIR="$here/rust/target" \
    cargo build --release --locked --manifest-path "$here/rust/Cargo.toml"
fi

if [[ $do_node == 1 ]]; then
  echo "== node peers (npm ci)"
  command -v node >/dev/null || { echo "node not found" >&2; exit 1; }
  lock="$here/node/package-lock.json"
  stamp="$here/node/node_modules/.package-lock.json"
  # npm ci always wipes node_modules; skip it when the install matches the lock.
  if [[ -f "$stamp" && "$stamp" -nt "$lock" ]]; then
    echo "node_modules is up to date with package-lock.json"
  else
    (cd "$here/node" && npm ci --no-audit --no-fund)
  fi
fi

echo
echo "peers:"
if [[ $do_rust == 1 ]]; then
  for b in "${rust_bins[@]}"; do
    printf '  %-28s %s\n' "$b" "$here/rust/target/release/$b"
  done
fi
if [[ $do_node == 1 ]]; then
  printf '  %-28s %s\n' "ws-echo" "node $here/node/echo.js"
  printf '  %-28s %s\n' "ws-broadcast" "node $here/node/broadcast.js"
fi
echo "all take: --listen ADDR [--workers N] [--verbose]   (Node: --workers 1 only)"
