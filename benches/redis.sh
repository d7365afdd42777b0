#!/usr/bin/env bash
# Fan-out across nodes on Redis against one in-memory node (issue 14, item 7).
#
#   bash benches/redis.sh            # the README's numbers: 10 s per run + 2 s warmup (~1.5 min)
#   bash benches/redis.sh --quick    # every run for 2 s + 0.5 s warmup (CI: nothing rots; ~20 s)
#   SUBSCRIBERS=600 RATE=1000 SETUPS="memory redis-3" LOADS=1000 bash benches/redis.sh
#
# Builds wsedge (release), starts a redis-server of its own on a free loopback port
# (persistence off), then for each setup and each load runs `wsedge bench fanout
# --rooms-protocol` with SUBSCRIBERS subscribers and one publisher (64 B):
#   memory    one `wsedge serve` without --redis, every connection on it
#   redis-1   one `wsedge serve --redis`, every connection on it: Redis's cost alone
#   redis-3   three `wsedge serve --redis`, the subscribers spread round-robin over them
#             (`--url` repeated), the publisher on the first
# Loads: RATE publishes/s (default 2,000), then unthrottled (--rate 0: the publisher keeps
# 16 messages in flight). Every node runs --workers 1 and a publish rate limit that never
# bites. Fresh nodes per run; Redis is flushed between runs.
#
# Around the run it samples Redis (INFO cpu, INFO commandstats) and the nodes' CPU time
# (/proc/PID/stat): once every connection has joined (against the sample before the bench:
# the commands per join, less those of the publishes that began meanwhile) and inside the
# edges of the measured window (0.2 s after its start, 0.4 s before its end: the closes
# must not count): the CPU and commands per publish, publishes counted by Redis (XADD
# calls), so the count and the costs come from the same interval. Commands the scripts
# run are counted in commandstats beside the EVALSHA that ran them.
#
# Prints one table (deliveries/s, latency p50/p99, the nodes' and Redis's CPU µs per
# publish, Redis commands per publish), then which commands ran how often per publish and
# per join. Raw JSON, samples and logs: target/redis-bench/<timestamp>/. Exit status 0, or
# 1 when the build, Redis, a node or a bench run failed (its log is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        -h | --help)
            sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "redis.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

if [[ -n $QUICK ]]; then
    DUR=${DUR:-2} WARM=${WARM:-0.5}
else
    DUR=${DUR:-10} WARM=${WARM:-2}
fi
SUBSCRIBERS=${SUBSCRIBERS:-300}
RATE=${RATE:-2000}
SETUPS=${SETUPS:-memory redis-1 redis-3}
LOADS=${LOADS:-$RATE 0}
SIZE=64
# Seconds the bench may take to open and join every connection.
SETUP_TIMEOUT=60

die() {
    echo "redis.sh: $*" >&2
    exit 1
}
command -v redis-server >/dev/null || die "redis-server not found (Debian: apt-get install redis-server)"
command -v redis-cli >/dev/null || die "redis-cli not found (it comes with redis-server)"
command -v python3 >/dev/null || die "python3 not found"

echo "== building wsedge (release)" >&2
cargo build --release --quiet --bin wsedge || die "cargo build --release failed"
WSEDGE=$ROOT/target/release/wsedge

STAMP=$(date -u +%Y%m%dT%H%M%SZ)${QUICK:+-quick}
OUT=$ROOT/target/redis-bench/$STAMP
mkdir -p "$OUT"
echo "== results in ${OUT#"$ROOT"/}" >&2

# ---- processes -------------------------------------------------------------------------------
# Every process this script starts, by pid; stopped on exit whatever happens.
STARTED=()
stop() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    [[ ${#STARTED[@]} -eq 0 ]] || stop "${STARTED[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

REDIS_PORT= REDIS_PID=
start_redis() {
    local attempt
    for attempt in 1 2 3; do
        REDIS_PORT=$(free_port)
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --logfile "$OUT/redis.log" &
        REDIS_PID=$!
        STARTED+=("$REDIS_PID")
        for _ in $(seq 100); do
            if [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; then
                echo "== redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on port $REDIS_PORT (pid $REDIS_PID)" >&2
                return 0
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.05
        done
        echo "   redis-server did not start on port $REDIS_PORT (attempt $attempt)" >&2
        stop "$REDIS_PID"
    done
    tail -n 20 "$OUT/redis.log" >&2 || true
    die "redis-server did not start"
}

# start_node LOG [serve flags...] -> appends the pid to NODE_PIDS and the address to NODE_ADDRS
NODE_PIDS=() NODE_ADDRS=()
start_node() {
    local log=$1 pid addr=
    shift
    RUST_LOG=info "$WSEDGE" serve --listen 127.0.0.1:0 --workers 1 --no-demo --shutdown-timeout 1 \
        --publish-rate 1000000 --publish-burst 1000000 "$@" >"$log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    for _ in $(seq 200); do
        addr=$(sed -n 's|.*listening on \(ws://\)\{0,1\}\([0-9.]*:[0-9][0-9]*\).*|\2|p' "$log" | head -1)
        [[ -n $addr ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [[ -z $addr ]]; then
        echo "   wsedge serve $* did not start:" >&2
        sed 's/^/     /' "$log" >&2
        die "a node did not start"
    fi
    NODE_PIDS+=("$pid")
    NODE_ADDRS+=("$addr")
}

# ---- samples ---------------------------------------------------------------------------------
# sample FILE: the time, the nodes' CPU ticks, and (with Redis) INFO cpu and commandstats.
sample() {
    local file=$1 pid
    {
        echo "time $(date +%s.%N)"
        for pid in "${NODE_PIDS[@]}"; do
            echo "node $pid $(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
        done
        if [[ -n $USE_REDIS ]]; then
            redis-cli -p "$REDIS_PORT" info cpu | tr -d '\r'
            redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r'
        fi
    } >"$file"
}

# sleep_until T: T in seconds since the epoch, fractions allowed.
sleep_until() {
    local left
    left=$(awk -v t="$1" -v now="$(date +%s.%N)" 'BEGIN { d = t - now; if (d < 0) d = 0; printf "%.3f", d }')
    sleep "$left"
}

# ---- runs ------------------------------------------------------------------------------------
USE_REDIS=
RUNS=()
run() {
    local setup=$1 rate=$2 nodes engine name base bench_pid rc=0 opened= t1 i
    case $setup in
        memory) nodes=1 engine=() USE_REDIS= ;;
        redis-[0-9]*) nodes=${setup#redis-} engine=(--redis "redis://127.0.0.1:$REDIS_PORT/") USE_REDIS=1 ;;
        *) die "unknown setup $setup (memory, redis-N)" ;;
    esac
    name=$setup.rate-$rate
    base=$OUT/$name
    RUNS+=("$name")
    echo "-- $setup, $( ((rate > 0)) && echo "$rate publishes/s" || echo unthrottled)" >&2
    [[ -z $USE_REDIS ]] || redis-cli -p "$REDIS_PORT" flushall >/dev/null

    NODE_PIDS=() NODE_ADDRS=()
    for i in $(seq "$nodes"); do start_node "$base.node$i.log" "${engine[@]}"; done
    local urls=()
    for i in "${NODE_ADDRS[@]}"; do urls+=(--url "ws://$i/ws"); done
    local load=(--rate "$rate")
    ((rate > 0)) || load=(--rate 0 --window 16)

    sample "$base.sample0"
    RUST_LOG=info "$WSEDGE" bench fanout --rooms-protocol --room bench "${urls[@]}" \
        --subscribers "$SUBSCRIBERS" --publishers 1 --size "$SIZE" "${load[@]}" \
        --duration "$DUR" --warmup "$WARM" --handshake-timeout 20 --json >"$base.json" 2>"$base.bench.log" &
    bench_pid=$!
    STARTED+=("$bench_pid")
    # The bench logs "N of M connections open after S s" once every join is answered; its
    # warmup starts right after.
    for _ in $(seq $((SETUP_TIMEOUT * 50))); do
        if grep -q ' open after ' "$base.bench.log"; then
            opened=1
            break
        fi
        kill -0 "$bench_pid" 2>/dev/null || break
        sleep 0.02
    done
    if [[ -n $opened ]]; then
        t1=$(date +%s.%N)
        sample "$base.sample1"
        sleep_until "$(awk -v t="$t1" -v w="$WARM" 'BEGIN { printf "%.3f", t + w + 0.2 }')"
        sample "$base.sample2"
        sleep_until "$(awk -v t="$t1" -v w="$WARM" -v d="$DUR" 'BEGIN { printf "%.3f", t + w + d - 0.4 }')"
        sample "$base.sample3"
    fi
    wait "$bench_pid" || rc=$?
    for i in "${NODE_PIDS[@]}"; do
        kill -0 "$i" 2>/dev/null || {
            sed 's/^/     /' "$base".node*.log >&2
            die "$name: a node exited during the run"
        }
    done
    stop "${NODE_PIDS[@]}"
    if [[ -z $opened || $rc -ne 0 ]] || ! python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$base.json" 2>/dev/null; then
        echo "   bench exit status $rc; the end of its log:" >&2
        tail -n 20 "$base.bench.log" | sed 's/^/     /' >&2
        die "$name: the bench run failed"
    fi
}

T0=$SECONDS
start_redis
for setup in $SETUPS; do
    for rate in $LOADS; do run "$setup" "$rate"; done
done
echo "== ran ${#RUNS[@]} runs in $((SECONDS - T0)) s" >&2

# ---- table -----------------------------------------------------------------------------------
python3 - "$OUT" "$(getconf CLK_TCK)" "$SUBSCRIBERS" "${RUNS[@]}" <<'EOF' | tee "$OUT/table.txt"
import json, os, sys

out, clk_tck, subscribers, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
OURS = {"info", "flushall"}  # this script's own commands

def sample(name, i):
    s = {"nodes": {}, "calls": {}, "cpu": None}
    for line in open(os.path.join(out, f"{name}.sample{i}")):
        parts = line.split()
        if parts[:1] == ["time"]:
            s["time"] = float(parts[1])
        elif parts[:1] == ["node"]:
            s["nodes"][parts[1]] = int(parts[2]) / clk_tck
        elif line.startswith("used_cpu_sys:") or line.startswith("used_cpu_user:"):
            s["cpu"] = (s["cpu"] or 0.0) + float(line.split(":")[1])
        elif line.startswith("cmdstat_"):
            cmd, stats = line[len("cmdstat_"):].split(":", 1)
            fields = dict(kv.split("=") for kv in stats.strip().split(","))
            if cmd not in OURS:
                s["calls"][cmd] = int(fields["calls"])
    return s

def delta_calls(a, b):
    return {c: n - a["calls"].get(c, 0) for c, n in b["calls"].items() if n - a["calls"].get(c, 0) > 0}

def per(calls, n):
    return {c: k / n for c, k in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))} if n else {}

def fmt(v, spec):
    return "-" if v is None else format(v, spec)

rows, breakdown = [], []
for name in runs:
    setup, rate = name.rsplit(".rate-", 1)
    r = json.load(open(os.path.join(out, f"{name}.json")))
    s0, s1, s2, s3 = (sample(name, i) for i in range(4))
    secs = s3["time"] - s2["time"]
    node_cpu = sum(s3["nodes"][p] - s2["nodes"][p] for p in s3["nodes"])
    redis = s2["cpu"] is not None
    calls = delta_calls(s2, s3) if redis else {}
    # Publishes in the sampled interval: Redis's own count (one XADD each), or the bench's rate.
    publishes = calls.get("xadd", 0) if redis else r["messages_per_sec"] * secs
    lat = r.get("latency_us") or {}
    notes = []
    if r["connections_open"] < r["connections"]:
        notes.append(f"{r['connections_open']}/{r['connections']} open")
    if r.get("errors"):
        notes.append(f"{r['errors']} errors ({'; '.join(r.get('error_kinds') or {})})")
    if r.get("connections_dropped"):
        notes.append(f"{r['connections_dropped']} dropped")
    nodes = len(s3["nodes"])
    label = ("1 node, in memory" if setup == "memory" else f"{nodes} node{'s' if nodes > 1 else ''} on Redis")
    load = f"{int(rate):,}/s" if int(rate) else "unthrottled"
    rows.append([
        label, load, f"{r['messages_per_sec']:,.0f}", f"{r['deliveries_per_sec']:,.0f}",
        fmt(lat.get("p50") and lat["p50"] / 1000, ".2f"), fmt(lat.get("p99") and lat["p99"] / 1000, ".2f"),
        fmt(node_cpu / publishes * 1e6 if publishes else None, ",.0f"),
        fmt((s3["cpu"] - s2["cpu"]) / publishes * 1e6 if redis and publishes else None, ".0f"),
        fmt(sum(calls.values()) / publishes if redis and publishes else None, ".1f"),
        ", ".join(notes),
    ])
    if redis:
        # Publishing starts once every join is answered, a little before sample 1: take the
        # publishes' share out of the joins' interval.
        per_pub = per(calls, publishes)
        joining = delta_calls(s0, s1)
        early = joining.get("xadd", 0)
        joining = {c: k - early * per_pub.get(c, 0) for c, k in joining.items()}
        joins = r["connections_open"]
        per_join = per({c: k for c, k in joining.items() if k > 0.5}, joins)
        breakdown.append((label, load, per_pub, per_join, publishes, joins))

print(f"fan-out, 1 publisher -> {subscribers} subscribers, {int(json.load(open(os.path.join(out, runs[0] + '.json')))['settings']['size'])} B, "
      f"wsedge.v1 (--workers 1 per node; CPU per publish over the window, all nodes together)")
head = ["setup", "load", "publishes/s", "deliveries/s", "p50 ms", "p99 ms", "nodes CPU µs/pub",
        "Redis CPU µs/pub", "Redis cmds/pub", "note"]
width = [max(len(str(x[i])) for x in rows + [head]) for i in range(len(head))]
for row in [head] + rows:
    cells = [str(c).ljust(w) if i in (0, 1, 9) else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, width))]
    print("  " + "  ".join(cells).rstrip())
for label, load, per_pub, per_join, publishes, joins in breakdown:
    print()
    print(f"{label}, {load}: Redis commands per publish ({publishes:,.0f} publishes sampled)")
    print("  " + ", ".join(f"{c} {k:.2f}" for c, k in per_pub.items()) + f"  (total {sum(per_pub.values()):.2f})")
    print(f"  per join ({joins} joins): " + ", ".join(f"{c} {k:.2f}" for c, k in per_join.items())
          + f"  (total {sum(per_join.values()):.2f})")
EOF
echo "(raw JSON, samples and logs: ${OUT#"$ROOT"/})"
