#!/usr/bin/env bash
# Runs the Autobahn WebSocket testsuite in both roles: fuzzingclient against `wsedge echo`,
# once over plaintext (ws://) and once over TLS (wss://, `--tls-cert/--tls-key` with a
# self-signed certificate made here; wstest does not verify certificates), and
# fuzzingserver against wsedge's client (examples/autobahn_client.rs, which echoes every
# case through `wsedge::client`). Fails unless every case's behavior and behaviorClose are
# OK or INFORMATIONAL in every run.
#
# Usage: bash autobahn/run.sh        (from any directory)
#
# Environment knobs (all optional):
#   AUTOBAHN_CASES       comma-separated case patterns replacing the spec's "cases",
#                        e.g. AUTOBAHN_CASES='1.*,2.*' for a quick run. The spec's
#                        exclude-cases (if any) still apply.
#   AUTOBAHN_PREFIX      where the Python 2.7 testsuite is installed
#                        (default: $HOME/.cache/wsedge/autobahn-py27).
#   AUTOBAHN_SERVER_CMD  server command to test instead of wsedge, with a {port}
#                        placeholder, e.g. 'python3 /tmp/echo.py {port}'. When set,
#                        `cargo build --release` is skipped.
#                        It gets `--tls-cert FILE --tls-key FILE` appended for the TLS run.
#                        The client run still tests wsedge's client.
#   AUTOBAHN_TIMEOUT     overall time limit for each wstest in seconds (default: 1800).
#   AUTOBAHN_RUNS        which runs, any of `plain tls client` (the default: all three).
#   AUTOBAHN_PARALLEL    1 (default): the runs go side by side, each with its own wstest
#                        (wstest spends most of a run waiting, so this is faster than one
#                        after the other on 2 cores); 0: one by one.
#
# Outputs (gitignored), per run NAME (plain, tls, client) in autobahn/reports/: server/,
# server-tls/ and clients/ (wstest's HTML + index.json), NAME-fuzzing{client,server}.json
# (generated spec), NAME-server.log (for client: wsedge's client), NAME-wstest.log; tls/
# holds the generated certificate.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

AUTOBAHN_VERSION=25.10.1
PY27=(env PYENV_VERSION=2.7.18 python2.7)
PREFIX="${AUTOBAHN_PREFIX:-$HOME/.cache/wsedge/autobahn-py27}"
SITE="$PREFIX/lib/python2.7/site-packages"
CONSTRAINTS="autobahn/constraints-py27.txt"
REPORT_ROOT="autobahn/reports"
TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}"
RUNS="${AUTOBAHN_RUNS:-plain tls client}"
PARALLEL="${AUTOBAHN_PARALLEL:-1}"

log() { echo "autobahn: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- install ----
install_testsuite() {
    local stamp
    stamp="autobahntestsuite==$AUTOBAHN_VERSION $(sha256sum "$CONSTRAINTS" | cut -d' ' -f1)"
    if [[ -f "$PREFIX/.installed" && "$(cat "$PREFIX/.installed")" == "$stamp" \
          && -x "$PREFIX/bin/wstest" ]]; then
        return 0
    fi

    "${PY27[@]}" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null \
        || die "Python 2.7.18 is needed (PYENV_VERSION=2.7.18 python2.7 does not run)"
    if ! "${PY27[@]}" -m pip --version >/dev/null 2>&1; then
        log "pip for Python 2.7 missing; bootstrapping it with ensurepip"
        "${PY27[@]}" -m ensurepip --default-pip >/dev/null
    fi

    log "installing autobahntestsuite==$AUTOBAHN_VERSION into $PREFIX"
    local t0=$SECONDS staging="$PREFIX.partial" attempt
    mkdir -p "$(dirname "$PREFIX")"
    for attempt in 1 2 3; do
        rm -rf "$staging"
        if "${PY27[@]}" -m pip install --quiet --no-warn-script-location \
                --ignore-installed --prefix "$staging" \
                -c "$CONSTRAINTS" "autobahntestsuite==$AUTOBAHN_VERSION"; then
            break
        fi
        [[ $attempt -lt 3 ]] || die "pip install of autobahntestsuite failed"
        log "pip install failed (attempt $attempt), retrying"
        sleep 5
    done
    # zope is a namespace package declared through a .pth file, which PYTHONPATH
    # does not process: without this, Twisted fails with "No module named zope.interface".
    mkdir -p "$staging/lib/python2.7/site-packages/zope"
    : > "$staging/lib/python2.7/site-packages/zope/__init__.py"
    # Smoke-test the install before marking it good.
    env PYENV_VERSION=2.7.18 PYTHONPATH="$staging/lib/python2.7/site-packages" \
        "$staging/bin/wstest" -a >/dev/null \
        || die "wstest does not start after install"
    echo "$stamp" > "$staging/.installed"
    rm -rf "$PREFIX"
    mv "$staging" "$PREFIX"
    log "installed in $((SECONDS - t0)) s"
}

install_testsuite

# ------------------------------------------------------------------ build ----
if [[ -z "${AUTOBAHN_SERVER_CMD:-}" ]]; then
    log "cargo build --release"
    cargo build --release
fi
if [[ " $RUNS " == *" client "* ]]; then
    log "cargo build --release --example autobahn_client"
    cargo build --release --example autobahn_client
fi
if [[ -z "${AUTOBAHN_SERVER_CMD:-}" ]]; then
    SERVER_CMD='exec target/release/wsedge echo --listen 127.0.0.1:{port}'
else
    SERVER_CMD="exec $AUTOBAHN_SERVER_CMD"
fi

mkdir -p "$REPORT_ROOT"
TLS_DIR="$REPORT_ROOT/tls"
if [[ " $RUNS " == *" tls "* ]]; then
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null \
        || die "openssl could not make a self-signed certificate"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A run's report directory: server/ for plain, clients/ for client, server-NAME/ for the others.
outdir_of() {
    case $1 in
        plain) echo "$REPORT_ROOT/server" ;;
        client) echo "$REPORT_ROOT/clients" ;;
        *) echo "$REPORT_ROOT/server-$1" ;;
    esac
}

# ------------------------------------------------------------------- spec ----
# The wstest mode a run uses: fuzzingserver for the client run, fuzzingclient otherwise.
mode_of() { if [[ $1 == client ]]; then echo fuzzingserver; else echo fuzzingclient; fi; }

# Writes NAME-MODE.json: for fuzzingclient, a server at SCHEME://127.0.0.1:PORT to test;
# for fuzzingserver, the address wstest listens on.
write_spec() {
    local name=$1 scheme=$2 port=$3 outdir suffix="" mode
    outdir="$(outdir_of "$name")"
    mode="$(mode_of "$name")"
    [[ $name == plain || $name == client ]] || suffix="-$name"
    rm -rf "$outdir"
    mkdir -p "$outdir"
    AB_PORT="$port" AB_SCHEME="$scheme" AB_OUTDIR="./$outdir" AB_AGENT_SUFFIX="$suffix" AB_MODE="$mode" \
    AB_GEN="$REPORT_ROOT/$name-$mode.json" AB_CASES="${AUTOBAHN_CASES:-}" python3 - <<'EOF'
import json, os
with open("autobahn/%s.json" % os.environ["AB_MODE"]) as f:
    spec = json.load(f)
spec["outdir"] = os.environ["AB_OUTDIR"]
if "url" in spec:
    spec["url"] = spec["url"].replace("PORT", os.environ["AB_PORT"])
for server in spec.get("servers", []):
    url = server["url"].replace("PORT", os.environ["AB_PORT"])
    server["url"] = url.replace("ws://", os.environ["AB_SCHEME"] + "://", 1)
    server["agent"] += os.environ["AB_AGENT_SUFFIX"]
cases = [c.strip() for c in os.environ["AB_CASES"].split(",") if c.strip()]
if cases:
    spec["cases"] = cases
with open(os.environ["AB_GEN"], "w") as f:
    json.dump(spec, f, indent=2)
EOF
}

# Number of cases a spec selects, computed by the testsuite's own case matcher, so that a
# run cut short (e.g. the server stopped accepting) is detected.
expected_cases() {
    env PYENV_VERSION=2.7.18 PYTHONPATH="$SITE" python2.7 - "$1" "$2" <<'EOF'
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseBasename
from autobahntestsuite.caseset import CaseSet
spec = json.load(open(sys.argv[1]))
cs = CaseSet(sys.argv[2], CaseBasename, Cases, CaseCategories, CaseSubCategories)
print(len(cs.parseSpecCases(spec)) * len(spec.get("servers", [None])))
EOF
}

# ----------------------------------------------------------------- server ----
# Each run's server PID is in NAME.server-pid (runs may be background jobs).
cleanup() {
    local pidfile pid
    for pidfile in "$REPORT_ROOT"/*.server-pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(cat "$pidfile")"
        rm -f "$pidfile"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            # setsid made the server its own process group: end that group only.
            kill -TERM -- "-$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------- wstest ----
# One run: its own server on a free port, its own wstest and report. Leaves NAME.status:
# "WSTEST_EXIT SERVER_DIED EXPECTED_CASES SECONDS".
run_suite() {
    local name=$1 scheme=ws port cmd pid rc=0 expected t0=$SECONDS
    local server_log="$REPORT_ROOT/$name-server.log" wstest_log="$REPORT_ROOT/$name-wstest.log"
    local spec="$REPORT_ROOT/$name-fuzzingclient.json"
    if [[ $name == client ]]; then
        run_client_suite
        return
    fi
    port="$(free_port)"
    cmd="${SERVER_CMD//\{port\}/$port}"
    if [[ $name == tls ]]; then
        scheme=wss
        cmd="$cmd --tls-cert $TLS_DIR/cert.pem --tls-key $TLS_DIR/key.pem"
    fi
    write_spec "$name" "$scheme" "$port"
    expected="$(expected_cases "$spec" fuzzingclient)"
    log "$name: $scheme://127.0.0.1:$port, $expected cases; server: ${cmd#exec } (log: $server_log)"
    setsid bash -c "$cmd" >"$server_log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" > "$REPORT_ROOT/$name.server-pid"
    local deadline=$((SECONDS + 20))
    until python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$server_log" >&2 || true
            log "$name: server exited before accepting connections"
            echo "1 1 $expected 0" > "$REPORT_ROOT/$name.status"
            return
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            log "$name: server did not accept connections on 127.0.0.1:$port within 20 s"
            echo "1 0 $expected 0" > "$REPORT_ROOT/$name.status"
            return
        fi
        sleep 0.2
    done
    log "$name: running wstest -m fuzzingclient"
    # PYTHONPATH is set for this process only: exported, it would break Python 3.
    timeout --kill-after=10 "$TIMEOUT" env PYENV_VERSION=2.7.18 PYTHONPATH="$SITE" \
        "$PREFIX/bin/wstest" -m fuzzingclient -s "$spec" >"$wstest_log" 2>&1 || rc=$?
    record_status "$name" "$rc" "$pid" server "$server_log" "$wstest_log" "$expected" "$t0"
}

# The end of a run: RC is the exit of what drove the cases (wstest, or for the client run
# wsedge's client); the background process PID (PEER: the server, or wstest) must still
# be alive. Prints the logs that explain a failure; writes NAME.status.
record_status() {
    local name=$1 rc=$2 pid=$3 peer=$4 peer_log=$5 log_file=$6 expected=$7 t0=$8 died=0
    log "$name: finished in $((SECONDS - t0)) s (exit $rc, log: $log_file)"
    if ! kill -0 "$pid" 2>/dev/null; then
        died=1
        log "$name: the $peer died during the run; last lines of $peer_log:"
        tail -n 20 "$peer_log" >&2 || true
    fi
    if [[ $rc -ne 0 ]]; then
        tail -n 30 "$log_file" >&2 || true
        [[ $rc -eq 124 ]] && log "$name: timed out after $TIMEOUT s"
    fi
    echo "$rc $died $expected $((SECONDS - t0))" > "$REPORT_ROOT/$name.status"
}

# The client run: wstest -m fuzzingserver on a free port (its PID where cleanup finds
# servers), and wsedge's client running every case against it, then asking for the report.
# Its status line has the client's exit code and whether wstest died before the end.
run_client_suite() {
    local name=client port pid rc=0 expected t0=$SECONDS
    local client_log="$REPORT_ROOT/client-server.log" wstest_log="$REPORT_ROOT/client-wstest.log"
    local spec="$REPORT_ROOT/client-fuzzingserver.json"
    port="$(free_port)"
    write_spec client ws "$port"
    expected="$(expected_cases "$spec" fuzzingserver)"
    log "client: wstest -m fuzzingserver on ws://127.0.0.1:$port, $expected cases (log: $wstest_log)"
    # wstest writes its report relative to the working directory: the spec's ./autobahn/...
    setsid env PYENV_VERSION=2.7.18 PYTHONPATH="$SITE" "$PREFIX/bin/wstest" -m fuzzingserver -s "$spec" \
        >"$wstest_log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" > "$REPORT_ROOT/client.server-pid"
    local deadline=$((SECONDS + 30))
    until python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || [[ $SECONDS -ge $deadline ]]; then
            tail -n 20 "$wstest_log" >&2 || true
            log "client: wstest -m fuzzingserver did not listen on 127.0.0.1:$port"
            echo "1 1 $expected 0" > "$REPORT_ROOT/client.status"
            return
        fi
        sleep 0.2
    done
    log "client: running target/release/examples/autobahn_client (log: $client_log)"
    timeout --kill-after=10 "$TIMEOUT" target/release/examples/autobahn_client "ws://127.0.0.1:$port" \
        >"$client_log" 2>&1 </dev/null || rc=$?
    record_status client "$rc" "$pid" "wstest server" "$wstest_log" "$client_log" "$expected" "$t0"
}

rm -f "$REPORT_ROOT"/*.status
t_all=$SECONDS
if [[ $PARALLEL == 1 ]]; then
    for name in $RUNS; do run_suite "$name" & done
    wait
else
    for name in $RUNS; do run_suite "$name"; done
fi
log "runs ($RUNS, parallel=$PARALLEL) took $((SECONDS - t_all)) s"
cleanup

# ----------------------------------------------------------------- report ----
check_report() {
python3 - "$@" <<'EOF'
import collections, json, os, sys

name, index, expected, server_died = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
GOOD = ("OK", "INFORMATIONAL")

if not os.path.exists(index):
    print("autobahn: no report at %s" % index)
    sys.exit(1)
with open(index) as f:
    report = json.load(f)

def key(case_id):
    return [int(p) if p.isdigit() else p for p in case_id.split(".")]

total, failed, tally, fail_tally = 0, [], collections.Counter(), collections.Counter()
for agent in sorted(report):
    for case_id in sorted(report[agent], key=key):
        r = report[agent][case_id]
        total += 1
        b, bc = r.get("behavior"), r.get("behaviorClose")
        if b in GOOD and bc in GOOD:
            tally[b] += 1
        else:
            bad = b if b not in GOOD else bc
            fail_tally[bad] += 1
            failed.append("  %s %s: behavior=%s behaviorClose=%s remoteCloseCode=%s (%s)"
                          % (agent, case_id, b, bc, r.get("remoteCloseCode"),
                             os.path.join(os.path.dirname(index), r.get("reportfile", "?"))))

parts = ["%d %s" % (tally[k], k) for k in GOOD]
parts += ["%d %s" % (n, k) for k, n in sorted(tally.items()) if k not in GOOD]
fail = "%d failed" % len(failed)
if fail_tally:
    fail += " (" + ", ".join("%d %s" % (n, k) for k, n in sorted(fail_tally.items())) + ")"
print("autobahn: %s: %d cases: %s, %s" % (name, total, ", ".join(parts), fail))

ok = True
if failed:
    print("autobahn: failing cases:")
    print("\n".join(failed))
    ok = False
if total == 0:
    print("autobahn: FAIL: the report has no cases")
    ok = False
elif total != expected:
    print("autobahn: FAIL: the report has %d cases, the spec selects %d" % (total, expected))
    ok = False
if server_died:
    print("autobahn: FAIL: the %s died during the run" % ("wstest server" if name == "client" else "server"))
    ok = False
print("autobahn: %s: %s (report: %s)" % (name, "PASS" if ok else "FAIL",
                                     os.path.join(os.path.dirname(index), "index.html")))
sys.exit(0 if ok else 1)
EOF
}

failed=0
for name in $RUNS; do
    status_file="$REPORT_ROOT/$name.status"
    if [[ ! -f "$status_file" ]]; then
        log "$name: no status (the run did not finish)"
        failed=1
        continue
    fi
    read -r rc died expected seconds < "$status_file"
    if [[ $name == client ]]; then what="wsedge's client"; else what=wstest; fi
    log "$name: $what exit $rc after $seconds s"
    [[ $rc -eq 0 ]] || failed=1
    check_report "$name" "$(outdir_of "$name")/index.json" "$expected" "$died" || failed=1
done
[[ $failed -eq 0 ]] || die "Autobahn failed (see above)"
log "PASS: every run clean"
