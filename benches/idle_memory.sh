#!/usr/bin/env bash
# Resident memory per idle WebSocket connection of `wsedge echo`, for each deflate setting.
#
#   bash benches/idle_memory.sh            # 10,000 connections, 2 s idle
#   CONNECTIONS=2000 IDLE_SECS=5 bash benches/idle_memory.sh
#
# For each mode it starts `target/release/wsedge echo` on a free loopback port, runs
# `examples/idle_connections.rs` against it (N handshakes offering permessage-deflate, one
# ~1 KiB compressible message echoed on each, then idle) and prints one line: the server's
# VmRSS growth per connection after the handshakes and after the message. Each connection is
# one file descriptor in the server and one in the client: N must stay below `ulimit -n`.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${CONNECTIONS:-10000}
IDLE=${IDLE_SECS:-2}
limit=$(ulimit -n)
if [ "$limit" != unlimited ] && [ $((N + 64)) -gt "$limit" ]; then
    echo "CONNECTIONS=$N needs more than ulimit -n ($limit) file descriptors" >&2
    exit 1
fi

cargo build --release --quiet --bin wsedge --example idle_connections

server_pid=
mkdir -p target
logdir=$(mktemp -d "$PWD/target/idle-memory.XXXXXX")
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$logdir"
}
trap cleanup EXIT

run_mode() {
    local name=$1
    shift
    local log=$logdir/$name.log
    RUST_LOG=info target/release/wsedge echo --listen 127.0.0.1:0 --max-connections $((N + 100)) "$@" 2>"$log" &
    server_pid=$!
    local addr=
    for _ in $(seq 200); do
        addr=$(sed -n 's|.*listening on ws://\([0-9.]*:[0-9]*\).*|\1|p' "$log")
        [ -n "$addr" ] && break
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$addr" ]; then
        echo "$name: server did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    local out
    if ! out=$(target/release/examples/idle_connections --server-pid "$server_pid" --addr "$addr" \
        --connections "$N" --idle-secs "$IDLE"); then
        echo "$out" >&2
        echo "$name: idle_connections failed" >&2
        exit 1
    fi
    [ -n "${VERBOSE:-}" ] && echo "$out" >&2
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    local result
    result=$(grep '^RESULT ' <<<"$out")
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$result"; }
    printf '%-10s %6s conns  RSS %7s -> %7s KiB  handshake only: %7s B/conn  after 1 msg, idle: %7s B/conn  compressed echoes: %s  (%s)\n' \
        "$name" "$(field connections)" "$(field rss_before_kib)" "$(field rss_after_kib)" \
        "$(field open_bytes_per_conn)" "$(field idle_bytes_per_conn)" "$(field compressed_echoes)" "$(field deflate)"
}

run_mode no-deflate --no-deflate
run_mode shared
run_mode dedicated --deflate-mode dedicated
