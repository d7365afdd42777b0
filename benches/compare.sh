#!/usr/bin/env bash
# wsedge against its peers (issue 6, item 5): the same `wsedge bench` settings on every server.
#
#   bash benches/compare.sh            # the issue's numbers: ~5 s per run + 1 s warmup (~6 min)
#   bash benches/compare.sh --quick    # every scenario briefly, smaller counts (CI: nothing rots)
#   SCENARIOS="echo-32B-d1 idle" SERVERS="wsedge fastwebsockets" bash benches/compare.sh
#   PIN=1 SERVERS="wsedge uwebsockets" bash benches/compare.sh   # server on core 0, client on 1
#
# Builds wsedge (release) and the peers (benches/peers/build.sh; uWebSockets with the
# build.sh in UWS_SOURCES, default ../shared/peers/uwebsockets beside the repository), then
# for each scenario and each server: starts the server on a free loopback port (peers and
# `wsedge` with --workers 1; uws_peer is one thread; `wsedge-mt` is wsedge with its default
# workers, one per core), waits for its "listening on" line, runs `wsedge bench ... --server-pid PID
# --json` under a timeout, stops the server, and keeps the JSON under
# target/compare/<timestamp>/. At the end it prints one table per scenario and writes one
# page, report.html beside the JSON (`wsedge bench-report`: per scenario, every server's
# latency by percentile and throughput over time overlaid), and prints its path. The table:
# throughput (messages/s for echo, deliveries/s for broadcast and fan-out), p99 latency, the server's CPU
# seconds per million messages (deliveries for broadcast/fan-out), RSS growth per connection
# for idle, and the ratios wsedge/peer (throughput) and peer/wsedge (CPU per message, memory):
# a ratio above 1 means wsedge is better. The wsedge-mt row's ratios compare it with wsedge on
# one worker instead (above 1: the default workers do better than one). A run that fails is shown as "failed" and the script
# goes on. Exit status: 0 all runs succeeded; 1 a wsedge run failed, a build failed or the
# table or the page could not be made; 3 only peer runs failed, or uWebSockets did not build (CI warns
# about those, it does not fail). Without gcc, g++ or zlib1g-dev (or its sources) uWebSockets
# is skipped with a warning: its rows, and idle-scale's, say "skipped"; the exit status is
# not affected.
#
# Servers: wsedge wsedge-mt tokio-tungstenite fastwebsockets node-ws uwebsockets (`uws_peer
# echo|broadcast PORT`: broadcast subscribes every connection to one topic whatever its path
# and publishes with App::publish, which includes the sender, as wsedge relay and the other
# peers do in the one room /bench that the scenarios use).
# BEFORE=PATH adds the server wsedge-before: another wsedge binary (e.g. main's, built in a
# worktree) with --workers 1, shown as a peer, so its ratios say what a change moved.
#   BEFORE=/tmp/wsedge-main SERVERS="wsedge wsedge-before uwebsockets" bash benches/compare.sh
# PIN=1 runs every server under `taskset -c 0` and every load generator under `taskset -c 1`
# (wsedge-mt's workers then share core 0).
# ROUNDS=N runs each scenario N times, the servers in a rotated order each round (none always
# goes first), and the table shows each figure's median over the rounds: what to use for a 5 %
# question on a shared machine, where single runs swing by 10 % or more.
#   ROUNDS=5 PIN=1 SERVERS="wsedge uwebsockets" SCENARIOS="echo-32B-d16 fanout-10k" bash benches/compare.sh
#
# Scenarios (full / --quick):
#   echo-32B-d1     echo 32 B, 100 connections, depth 1
#   echo-32B-d16    echo 32 B, 100 connections, depth 16
#   echo-16KiB      echo 16 KiB, 10 connections, depth 1
#   broadcast-100   20 B, 100 connections in /bench, everyone sends, everyone receives all
#   broadcast-1000  the same among 1,000 connections
#   fanout-10k      64 B from 1 publisher to 10,000 subscribers (--quick: 1,000), window 16
#   fanout-10k-rate the same at a fixed rate: FANOUT_RATE publishes/s (default 600,000
#                   deliveries/s: 60/s to 10,000) -- the p99 latency goal
#   idle            10,000 idle connections (--quick: 1,000): server RSS growth / connection
#   idle-scale      the same measured the way uWebSockets measures it: its benchmarks/scale_test
#                   holds the connections (upgrade sent, no answer read, a 20 B message every
#                   8 s), the server's RSS growth per connection after IDLE_DUR s of holding
# The load generator runs one client thread (leaving the server the other core) and spreads
# big runs over fresh 127.0.N.x source addresses (ephemeral ports, TIME_WAIT).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

QUICK=
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

# MARGIN: seconds a run may take beyond duration + warmup (connection setup, the close
# handshake) before it is killed as timed out. --quick runs took at most ~4 s in all.
if [ -n "$QUICK" ]; then
    DUR=1; WARM=0.5; FANOUT_SUBS=1000; IDLE_CONNS=1000; IDLE_DUR=1; MARGIN=30
else
    DUR=5; WARM=1; FANOUT_SUBS=10000; IDLE_CONNS=10000; IDLE_DUR=3; MARGIN=90
fi
# Open-loop fan-out: publishes/s from the one publisher. The default, 60/s to 10,000
# (600,000 deliveries/s), is above what the best peer sustained in the closed-loop run.
FANOUT_RATE=${FANOUT_RATE:-$((600000 / FANOUT_SUBS))}
ALL_SCENARIOS="echo-32B-d1 echo-32B-d16 echo-16KiB broadcast-100 broadcast-1000 fanout-10k fanout-10k-rate idle idle-scale"
ALL_SERVERS="wsedge wsedge-mt tokio-tungstenite fastwebsockets node-ws uwebsockets"
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
SERVERS=${SERVERS:-$ALL_SERVERS}
ROUNDS=${ROUNDS:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: ROUNDS must be a positive number" >&2; exit 2; }
# Where uWebSockets' pinned sources and build.sh are: beside the repository in this machine's
# layout, wherever the clone is.
UWS_SOURCES=${UWS_SOURCES:-$ROOT/../shared/peers/uwebsockets}
[ -f "$UWS_SOURCES/build.sh" ] || [ ! -f /work/shared/peers/uwebsockets/build.sh ] || UWS_SOURCES=/work/shared/peers/uwebsockets

# PIN=1: server and load generator each on a core of their own, as uWebSockets' numbers are taken.
SERVER_PIN=() CLIENT_PIN=()
if [ "${PIN:-0}" = 1 ]; then
    command -v taskset >/dev/null || { echo "compare.sh: PIN=1 needs taskset (util-linux)" >&2; exit 2; }
    [ "$(nproc)" -ge 2 ] || { echo "compare.sh: PIN=1 needs 2 cores" >&2; exit 2; }
    SERVER_PIN=(taskset -c 0) CLIENT_PIN=(taskset -c 1)
fi
wants() { [[ " $1 " == *" $2 "* ]]; }

# ---- build ---------------------------------------------------------------------------------
echo "== building wsedge (release) and the peers" >&2
T0=$SECONDS
cargo build --release --quiet --bin wsedge || { echo "compare.sh: cargo build failed" >&2; exit 1; }
bash benches/peers/build.sh >/dev/null || { echo "compare.sh: benches/peers/build.sh failed" >&2; exit 1; }
WSEDGE=$ROOT/target/release/wsedge
PEERS=$ROOT/benches/peers/rust/target/release
NODE=$ROOT/benches/peers/node

# uWebSockets (uws_peer and its scale_test), when asked for. A machine without the compilers
# or zlib skips it with a warning (UWS_SKIP); a build that fails with them is a peer failure.
UWS_BIN="" UWS_SKIP="" UWS_FAILED=""
build_uws() {
    local missing=() log=$ROOT/target/uws/build.log
    if [ ! -f "$UWS_SOURCES/build.sh" ]; then
        UWS_SKIP="no uWebSockets sources in $UWS_SOURCES (set UWS_SOURCES)"; return
    fi
    command -v gcc >/dev/null || missing+=(gcc)
    command -v g++ >/dev/null || missing+=(g++)
    if command -v gcc >/dev/null && ! printf '#include <zlib.h>\n' | gcc -E -x c - >/dev/null 2>&1; then
        missing+=(zlib1g-dev)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        UWS_SKIP="missing ${missing[*]}"; return
    fi
    mkdir -p "$ROOT/target/uws"
    if UWS_HOME=$ROOT/target/uws bash "$UWS_SOURCES/build.sh" >"$log" 2>&1; then
        UWS_BIN=$ROOT/target/uws/bin
    else
        UWS_FAILED="uWebSockets build failed: ${log#"$ROOT"/}"
    fi
}
if wants "$SERVERS" uwebsockets || wants "$SCENARIOS" idle-scale; then
    build_uws
    # "== " lines are what CI shows of this script's progress.
    [ -z "$UWS_SKIP" ] || echo "== WARNING: uWebSockets skipped: $UWS_SKIP" >&2
    [ -z "$UWS_FAILED" ] || echo "== WARNING: $UWS_FAILED" >&2
fi
echo "== built in $((SECONDS - T0)) s" >&2

STAMP=$(date -u +%Y%m%dT%H%M%SZ)${QUICK:+-quick}
OUT=$ROOT/target/compare/$STAMP
mkdir -p "$OUT"
echo "== results in ${OUT#"$ROOT"/}" >&2

# ---- servers -------------------------------------------------------------------------------
SERVER_PID=
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}
trap 'stop_server' EXIT
trap 'stop_server; exit 130' INT TERM

# A port free now on 127.0.0.1, for servers that take a port rather than --listen ADDR.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server SERVER KIND(echo|broadcast) LOG -> sets SERVER_PID and ADDR, or returns 1
start_server() {
    local server=$1 kind=$2 log=$3 port=
    local -a cmd
    case $server/$kind in
        wsedge/echo) cmd=("$WSEDGE" echo --workers 1) ;;
        wsedge/broadcast) cmd=("$WSEDGE" relay --workers 1) ;;
        wsedge-mt/echo) cmd=("$WSEDGE" echo) ;;
        wsedge-mt/broadcast) cmd=("$WSEDGE" relay) ;;
        wsedge-before/echo) cmd=("$BEFORE" echo --workers 1) ;;
        wsedge-before/broadcast) cmd=("$BEFORE" relay --workers 1) ;;
        tokio-tungstenite/*) cmd=("$PEERS/tokio-tungstenite-$kind" --workers 1) ;;
        fastwebsockets/*) cmd=("$PEERS/fastwebsockets-$kind" --workers 1) ;;
        node-ws/*) cmd=(node "$NODE/$kind.js" --workers 1) ;;
        # Listens on 127.0.0.1 and prints "listening on PORT" once it does.
        uwebsockets/*) port=$(free_port) && cmd=("$UWS_BIN/uws_peer" "$kind" "$port") || return 1 ;;
        *) echo "unknown server $server" >&2; return 1 ;;
    esac
    if [[ $server == wsedge* ]]; then
        # Room for 10,000+ connections; quick shutdown.
        cmd+=(--max-connections 20000 --shutdown-timeout 1)
        RUST_LOG=info "${SERVER_PIN[@]}" "${cmd[@]}" --listen 127.0.0.1:0 >"$log" 2>&1 &
    elif [ -n "$port" ]; then
        "${SERVER_PIN[@]}" "${cmd[@]}" >"$log" 2>&1 &
    else
        "${SERVER_PIN[@]}" "${cmd[@]}" --listen 127.0.0.1:0 >"$log" 2>&1 &
    fi
    SERVER_PID=$!
    ADDR=
    for _ in $(seq 200); do
        ADDR=$(sed -n 's|.*listening on \(ws://\)\{0,1\}\([0-9.]*:[0-9][0-9]*\).*|\2|p' "$log" | head -1)
        if [ -z "$ADDR" ] && [ -n "$port" ] && grep -qx "listening on $port" "$log"; then
            ADDR=127.0.0.1:$port
        fi
        [ -n "$ADDR" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "   $server ($kind) did not start:" >&2
    sed 's/^/     /' "$log" >&2
    stop_server
    return 1
}

# ---- scenarios -----------------------------------------------------------------------------
RUN=0
# bench_args SCENARIO ADDR -> prints the server kind on line 1, then one bench argument per line
bench_args() {
    local sc=$1 addr=$2
    local common=(--duration "$DUR" --warmup "$WARM")
    # Fresh source addresses per run: 10,000 connections per run would otherwise pile up
    # TIME_WAIT ports on 127.0.0.1 across runs.
    local ips="127.0.$RUN.2,127.0.$RUN.3"
    case $sc in
        echo-32B-d1) printf '%s\n' echo echo --url "ws://$addr/" --connections 100 --size 32 --depth 1 "${common[@]}" ;;
        echo-32B-d16) printf '%s\n' echo echo --url "ws://$addr/" --connections 100 --size 32 --depth 16 "${common[@]}" ;;
        echo-16KiB) printf '%s\n' echo echo --url "ws://$addr/" --connections 10 --size 16384 --depth 1 "${common[@]}" ;;
        broadcast-100) printf '%s\n' broadcast fanout --url "ws://$addr/bench" --all-publish --subscribers 100 --size 20 "${common[@]}" ;;
        broadcast-1000) printf '%s\n' broadcast fanout --url "ws://$addr/bench" --all-publish --subscribers 1000 --size 20 "${common[@]}" ;;
        fanout-10k) printf '%s\n' broadcast fanout --url "ws://$addr/bench" --subscribers "$FANOUT_SUBS" --publishers 1 --size 64 --bind-ips "$ips" "${common[@]}" ;;
        fanout-10k-rate) printf '%s\n' broadcast fanout --url "ws://$addr/bench" --subscribers "$FANOUT_SUBS" --publishers 1 --size 64 --rate "$FANOUT_RATE" --bind-ips "$ips" "${common[@]}" ;;
        idle) printf '%s\n' echo idle --url "ws://$addr/" --connections "$IDLE_CONNS" --bind-ips "$ips" --duration "$IDLE_DUR" --warmup "$WARM" ;;
        # Not `wsedge bench`: run_scale_test below.
        idle-scale) printf '%s\n' echo scale-test ;;
        *) return 1 ;;
    esac
}

proc_rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SERVER_PID/status"; }
proc_fds() { find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# run_scale_test ADDR JSON LOG: uWebSockets' benchmarks/scale_test holds IDLE_CONNS connections
# to the server (`scale_test CONNECTIONS HOST PORT SSL [SOURCE_IP ...]`: it connects one at a
# time, writes the upgrade request and never reads the answer, sends a 20 B binary message on
# each every 8 s and runs until killed). The server's RSS and open descriptors come from /proc:
# before, once it holds every connection (its descriptors grew by IDLE_CONNS), and IDLE_DUR s
# later; the growth per connection held is taken at the end, the handshakes long answered. The
# JSON has the fields the table reads from `wsedge bench idle` (fewer held within MARGIN s:
# a note in the table, like fewer open there). Returns 1 when it holds none.
run_scale_test() {
    local addr=$1 json=$2 log=$3 n=$IDLE_CONNS t0=$SECONDS
    local rss0 fd0 rss1 rss2 fds client
    rss0=$(proc_rss_kib) fd0=$(proc_fds)
    # A fresh source address, as for the bench (TIME_WAIT ports of earlier runs).
    "${CLIENT_PIN[@]}" "$UWS_BIN/scale_test" "$n" "${addr%:*}" "${addr##*:}" 0 "127.0.$RUN.2" >"$log" 2>&1 &
    client=$!
    while [ $((SECONDS - t0)) -lt "$MARGIN" ] && kill -0 "$client" 2>/dev/null && kill -0 "$SERVER_PID" 2>/dev/null; do
        [ $(($(proc_fds) - fd0)) -lt "$n" ] || break
        sleep 0.1
    done
    rss1=$(proc_rss_kib)
    sleep "$IDLE_DUR"
    rss2=$(proc_rss_kib) fds=$(proc_fds)
    kill "$client" 2>/dev/null
    wait "$client" 2>/dev/null
    [ -n "$rss2" ] || return 1
    python3 - "$n" "$((fds - fd0))" "$rss0" "$rss1" "$rss2" "$((SECONDS - t0))" >"$json" <<'PY'
import json, sys
n, open_, rss0, rss1, rss2, secs = (int(a) for a in sys.argv[1:])
open_ = max(0, min(n, open_))
growth = (rss2 - rss0) * 1024
print(json.dumps({
    "scenario": "idle-scale", "client": "uWebSockets benchmarks/scale_test",
    "connections": n, "connections_open": open_, "seconds": secs,
    "server": {"rss_before_bytes": rss0 * 1024, "rss_connected_bytes": rss1 * 1024,
               "rss_end_bytes": rss2 * 1024, "rss_growth_bytes": growth,
               "rss_growth_per_connection_bytes": growth / open_ if open_ else None},
}, indent=2))
PY
    [ $((fds - fd0)) -gt 0 ]
}

WSEDGE_FAILED=0 PEER_FAILED=0
T0=$SECONDS
read -ra SERVER_LIST <<<"$SERVERS"
for sc in $SCENARIOS; do
    bench_args "$sc" x >/dev/null || { echo "compare.sh: unknown scenario $sc" >&2; exit 2; }
    for round in $(seq "$ROUNDS"); do
    # Round r starts at the r-th server (none always runs first: the order biases runs here).
    shift_by=$(((round - 1) % ${#SERVER_LIST[@]}))
    for server in "${SERVER_LIST[@]:shift_by}" "${SERVER_LIST[@]:0:shift_by}"; do
        RUN=$((RUN + 1))
        base=$OUT/$sc.$server
        label="$sc on $server"
        if [ "$ROUNDS" -gt 1 ]; then
            base=$OUT/$sc.$server.r$round
            label="$label (round $round of $ROUNDS)"
        fi
        kind=$(bench_args "$sc" x | head -1)
        echo "-- $label" >&2
        rm -f "$base.json" "$base.failed" "$base.skipped"
        # No uWebSockets: its rows, and idle-scale (its client), are skipped, not failed.
        skip=
        if [ "$server" = uwebsockets ] || [ "$sc" = idle-scale ]; then
            skip=${UWS_SKIP:-$UWS_FAILED}
        fi
        if [ -n "$skip" ]; then
            echo "$skip" >"$base.skipped"
            echo "   skipped: $skip" >&2
            # A failed build (the compilers are there) is a peer failure: exit 3.
            [ -z "$UWS_FAILED" ] || PEER_FAILED=1
            continue
        fi
        if ! start_server "$server" "$kind" "$base.server.log"; then
            echo "server did not start" >"$base.failed"
            case $server in wsedge | wsedge-mt) WSEDGE_FAILED=1 ;; *) PEER_FAILED=1 ;; esac
            continue
        fi
        mapfile -t args < <(bench_args "$sc" "$ADDR" | tail -n +2)
        # Setup of 10,000 connections plus the run itself, with a generous margin.
        limit=$(awk -v d="$DUR" -v w="$WARM" -v m="$MARGIN" 'BEGIN { printf "%d", d + w + m }')
        if [ "${args[0]}" = scale-test ]; then
            rc=0
            run_scale_test "$ADDR" "$base.json" "$base.bench.log" || rc=1
            [ $rc -eq 0 ] || echo "scale_test: the server held no connection" >>"$base.bench.log"
        else
            timeout -k 5 "$limit" "${CLIENT_PIN[@]}" env RUST_LOG=warn "$WSEDGE" bench "${args[@]}" \
                --server-pid "$SERVER_PID" --json >"$base.json" 2>"$base.bench.log"
            rc=$?
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server exited during the run" >"$base.failed"
        elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            echo "timed out after ${limit}s" >"$base.failed"
        elif [ $rc -ne 0 ]; then
            echo "bench exit status $rc: $(tail -1 "$base.bench.log")" >"$base.failed"
        elif ! jq -e . "$base.json" >/dev/null 2>&1; then
            echo "no JSON report" >"$base.failed"
        fi
        stop_server
        if [ -e "$base.failed" ]; then
            case $server in wsedge | wsedge-mt) WSEDGE_FAILED=1 ;; *) PEER_FAILED=1 ;; esac
            echo "   failed: $(cat "$base.failed")" >&2
        fi
    done
    done
done

echo "== ran $RUN runs in $((SECONDS - T0)) s" >&2

# ---- table ---------------------------------------------------------------------------------
python3 - "$OUT" "$QUICK" "$SCENARIOS" "$SERVERS" "${CLIENT_PIN[*]}" "$ROUNDS" <<'EOF' | tee "$OUT/table.txt"
import json, os, statistics, sys
out, quick, scenarios, servers, pin = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split(), sys.argv[5]
rounds = int(sys.argv[6])

def load(sc, srv):
    """The server's report for a scenario (its first round's, with ROUNDS), or why there is none."""
    return load_run(os.path.join(out, f"{sc}.{srv}" + (".r1" if rounds > 1 else "")))

def runs(sc, srv):
    """Every round's report, or the first reason one is missing."""
    if rounds == 1:
        r, err = load(sc, srv)
        return ([r], None) if r else ([], err)
    reports = []
    for i in range(1, rounds + 1):
        r, err = load_run(os.path.join(out, f"{sc}.{srv}.r{i}"))
        if r is None:
            return [], err if err.startswith("skipped: ") else f"round {i}: {err}"
        reports.append(r)
    return reports, None

def load_run(base):
    if os.path.exists(base + ".skipped"):
        return None, "skipped: " + open(base + ".skipped").read().strip()
    if os.path.exists(base + ".failed"):
        return None, open(base + ".failed").read().strip()
    try:
        return json.load(open(base + ".json")), None
    except Exception as e:
        return None, f"unreadable report: {e}"

def fmt(v, spec):
    return "-" if v is None else format(v, spec)

def ratio(num, den):
    return f"{num / den:.2f}x" if num and den else "-"

pinned = "; server on core 0, load generator on core 1" if pin else ""
medians = f"; each figure the median of {rounds} rounds" if rounds > 1 else ""
print(f"wsedge vs peers ({'--quick' if quick else 'full'}; wsedge and peers --workers 1, wsedge-mt one worker "
      f"per core; ratios > 1: wsedge better; wsedge-mt's ratios are against wsedge on one worker{pinned}{medians})")
def status(err):
    return "skipped" if err.startswith("skipped: ") else "failed"

def why(err):
    return err.removeprefix("skipped: ")

for sc in scenarios:
    idle = sc.startswith("idle")
    fan = sc.startswith(("broadcast", "fanout"))
    rows, base = [], None
    for srv in servers:
        reports, err = runs(sc, srv)
        if not reports:
            rows.append((srv, None, err)); continue
        figures = {"rate": [], "p99": [], "cpu": [], "rss": []}
        notes = []
        for r in reports:
            s = r.get("server") or {}
            lat = r.get("latency_us") or {}
            figures["rate"].append(r.get("deliveries_per_sec" if fan else "messages_per_sec"))
            figures["p99"].append(lat.get("p99") / 1000 if lat.get("p99") is not None else None)
            figures["cpu"].append(s.get("cpu_seconds_per_million_deliveries" if fan else "cpu_seconds_per_million_messages"))
            figures["rss"].append(s.get("rss_growth_per_connection_bytes"))
            want = r["connections"]
            if r["connections_open"] < want:
                notes.append(f"{r['connections_open']}/{want} open")
            if r.get("connections_dropped"):
                notes.append(f"{r['connections_dropped']} dropped")
            if r.get("errors"):
                kinds = "; ".join(r.get("error_kinds") or {})
                notes.append(f"{r['errors']} errors" + (f" ({kinds})" if kinds else ""))
            if not idle and not r.get("messages"):
                notes.append("no publish completed in the window" if fan else "no messages")
        # The median of each figure over the rounds (a missing figure in any round: none).
        m = {k: statistics.median(v) if None not in v else None for k, v in figures.items()}
        m["note"] = list(dict.fromkeys(notes))
        if rounds > 1 and None not in figures["rate"] and not idle:
            lo, hi = min(figures["rate"]), max(figures["rate"])
            m["note"].append(f"{'deliveries' if fan else 'messages'}/s {lo:,.0f} to {hi:,.0f}")
        if srv == "wsedge":
            base = m
        rows.append((srv, m, None))
    conns = {"echo-32B-d1": "100 conns, depth 1", "echo-32B-d16": "100 conns, depth 16",
             "echo-16KiB": "10 conns", "broadcast-100": "20 B, 100 conns",
             "broadcast-1000": "20 B, 1,000 conns"}.get(sc, "")
    print()
    if idle:
        r0 = next((load(sc, s)[0] for s in servers if load(sc, s)[0]), None)
        n = r0["connections"] if r0 else "?"
        how = ", held by uWebSockets' scale_test" if sc == "idle-scale" else ""
        print(f"{sc} ({n} connections{how})")
        print(f"  {'server':<18} {'RSS B/conn':>11} {'mem ratio':>10}  note")
        for srv, m, err in rows:
            if m is None:
                print(f"  {srv:<18} {status(err):>11} {'-':>10}  {why(err)}"); continue
            if srv == "wsedge-mt":
                rr = ratio(base["rss"], m["rss"]) if base else ""
            else:
                rr = ratio(m["rss"], base["rss"]) if base and srv != "wsedge" else ""
            print(f"  {srv:<18} {fmt(m['rss'], ',.0f'):>11} {rr:>10}  {', '.join(m['note'])}")
        continue
    if sc.startswith("fanout"):
        r0 = next((load(sc, s)[0] for s in servers if load(sc, s)[0]), None)
        how = "window 16"
        if r0 and r0["settings"].get("rate"):
            how = f"{r0['settings']['rate']:g} publishes/s"
        conns = f"64 B, 1 publisher -> {r0['connections'] - 1 if r0 else '?'} subscribers, {how}"
    unit = "deliveries/s" if fan else "messages/s"
    cpu_unit = "CPU s/M deliv" if fan else "CPU s/M msgs"
    print(f"{sc} ({conns})")
    print(f"  {'server':<18} {unit:>13} {'p99 ms':>8} {cpu_unit:>13} {'thr ratio':>10} {'CPU ratio':>10}  note")
    for srv, m, err in rows:
        if m is None:
            print(f"  {srv:<18} {status(err):>13} {'-':>8} {'-':>13} {'-':>10} {'-':>10}  {why(err)}"); continue
        if base and srv == "wsedge-mt":
            tr, cr = ratio(m["rate"], base["rate"]), ratio(base["cpu"], m["cpu"])
        elif base and srv != "wsedge":
            tr, cr = ratio(base["rate"], m["rate"]), ratio(m["cpu"], base["cpu"])
        else:
            tr = cr = ""
        print(f"  {srv:<18} {fmt(m['rate'], ',.0f'):>13} {fmt(m['p99'], '.2f'):>8} "
              f"{fmt(m['cpu'], '.3f'):>13} {tr:>10} {cr:>10}  {', '.join(m['note'])}")
EOF
TABLE_RC=${PIPESTATUS[0]}
echo "(raw JSON, server and bench logs: ${OUT#"$ROOT"/})"

# ---- page ----------------------------------------------------------------------------------
# One HTML page (`wsedge bench-report`): per scenario, the servers' numbers, latency by
# percentile and throughput over time overlaid. Runs that failed or were skipped are left out;
# with ROUNDS, each round is a line of its own (wsedge.r1, wsedge.r2, ...).
ROUND_SUFFIXES=("")
[ "$ROUNDS" -eq 1 ] || mapfile -t ROUND_SUFFIXES < <(seq -f '.r%g' "$ROUNDS")
REPORTS=()
for sc in $SCENARIOS; do
    for server in $SERVERS; do
        for suffix in "${ROUND_SUFFIXES[@]}"; do
            base=$OUT/$sc.$server$suffix
            if [ -s "$base.json" ] && [ ! -e "$base.failed" ]; then REPORTS+=("$base.json"); fi
        done
    done
done
PAGE=$OUT/report.html PAGE_RC=0
if [ ${#REPORTS[@]} -gt 0 ]; then
    "$WSEDGE" bench-report --title "wsedge vs peers (${QUICK:+--quick, }$STAMP)" --out "$PAGE" "${REPORTS[@]}" \
        >/dev/null 2>"$OUT/report.log" || PAGE_RC=$?
    if [ "$PAGE_RC" -eq 0 ]; then
        echo "(report page: ${PAGE#"$ROOT"/})"
    else
        echo "compare.sh: wsedge bench-report failed (exit $PAGE_RC): $(tail -1 "$OUT/report.log")" >&2
    fi
fi
if [ "$TABLE_RC" -ne 0 ]; then
    echo "compare.sh: the table script failed (exit $TABLE_RC)" >&2
    exit 1
fi
if [ "$PAGE_RC" -ne 0 ]; then
    exit 1
fi
if [ "$WSEDGE_FAILED" -ne 0 ]; then
    echo "compare.sh: a wsedge run failed" >&2
    exit 1
fi
if [ "$PEER_FAILED" -ne 0 ]; then
    echo "compare.sh: only peer runs failed (exit 3)" >&2
    exit 3
fi
exit 0
