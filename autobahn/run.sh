#!/usr/bin/env bash
# Runs the Autobahn WebSocket testsuite (fuzzingclient mode) against `wsedge echo`
# and fails unless every case's behavior and behaviorClose are OK or INFORMATIONAL.
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
#   AUTOBAHN_TIMEOUT     overall time limit for wstest in seconds (default: 1800).
#
# Outputs (gitignored): autobahn/reports/server/ (wstest's HTML + index.json),
# autobahn/reports/fuzzingclient.json (generated spec), autobahn/reports/server.log.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

AUTOBAHN_VERSION=25.10.1
PY27=(env PYENV_VERSION=2.7.18 python2.7)
PREFIX="${AUTOBAHN_PREFIX:-$HOME/.cache/wsedge/autobahn-py27}"
SITE="$PREFIX/lib/python2.7/site-packages"
CONSTRAINTS="autobahn/constraints-py27.txt"
REPORT_ROOT="autobahn/reports"
OUTDIR="$REPORT_ROOT/server"
GEN_SPEC="$REPORT_ROOT/fuzzingclient.json"
SERVER_LOG="$REPORT_ROOT/server.log"
TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}"

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
    SERVER_CMD='exec target/release/wsedge echo --listen 127.0.0.1:{port}'
else
    SERVER_CMD="exec $AUTOBAHN_SERVER_CMD"
fi

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

# ------------------------------------------------------------------- spec ----
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
AB_PORT="$PORT" AB_GEN="$GEN_SPEC" AB_CASES="${AUTOBAHN_CASES:-}" python3 - <<'EOF'
import json, os
with open("autobahn/fuzzingclient.json") as f:
    spec = json.load(f)
for server in spec["servers"]:
    server["url"] = server["url"].replace("PORT", os.environ["AB_PORT"])
cases = [c.strip() for c in os.environ["AB_CASES"].split(",") if c.strip()]
if cases:
    spec["cases"] = cases
with open(os.environ["AB_GEN"], "w") as f:
    json.dump(spec, f, indent=2)
EOF
# Number of cases the spec selects, computed by the testsuite's own case matcher,
# so that a run cut short (e.g. the server stopped accepting) is detected.
EXPECTED="$(env PYENV_VERSION=2.7.18 PYTHONPATH="$SITE" python2.7 - "$GEN_SPEC" <<'EOF'
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseBasename
from autobahntestsuite.caseset import CaseSet
spec = json.load(open(sys.argv[1]))
cs = CaseSet("fuzzingclient", CaseBasename, Cases, CaseCategories, CaseSubCategories)
print(len(cs.parseSpecCases(spec)) * len(spec["servers"]))
EOF
)"
log "spec $GEN_SPEC: port $PORT, $EXPECTED cases"

# ----------------------------------------------------------------- server ----
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        # setsid made the server its own process group: end that group only.
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cmd="${SERVER_CMD//\{port\}/$PORT}"
log "starting server: ${cmd#exec } (log: $SERVER_LOG)"
setsid bash -c "$cmd" >"$SERVER_LOG" 2>&1 </dev/null &
SERVER_PID=$!

deadline=$((SECONDS + 20))
until python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$PORT" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 20 "$SERVER_LOG" >&2 || true
        die "server exited before accepting connections"
    fi
    [[ $SECONDS -lt $deadline ]] || die "server did not accept connections on 127.0.0.1:$PORT within 20 s"
    sleep 0.2
done

# ----------------------------------------------------------------- wstest ----
log "running wstest -m fuzzingclient"
t0=$SECONDS
rc=0
# PYTHONPATH is set for this process only: exported, it would break Python 3.
timeout --kill-after=10 "$TIMEOUT" env PYENV_VERSION=2.7.18 PYTHONPATH="$SITE" \
    "$PREFIX/bin/wstest" -m fuzzingclient -s "$GEN_SPEC" >"$REPORT_ROOT/wstest.log" 2>&1 || rc=$?
log "wstest finished in $((SECONDS - t0)) s (exit $rc, log: $REPORT_ROOT/wstest.log)"

SERVER_DIED=0
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    SERVER_DIED=1
    log "server died during the run; last lines of $SERVER_LOG:"
    tail -n 20 "$SERVER_LOG" >&2 || true
fi
if [[ $rc -ne 0 ]]; then
    tail -n 30 "$REPORT_ROOT/wstest.log" >&2 || true
    [[ $rc -eq 124 ]] && die "wstest timed out after $TIMEOUT s"
    die "wstest exited with status $rc"
fi

# ----------------------------------------------------------------- report ----
python3 - "$OUTDIR/index.json" "$EXPECTED" "$SERVER_DIED" <<'EOF'
import collections, json, os, sys

index, expected, server_died = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
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
print("autobahn: %d cases: %s, %s" % (total, ", ".join(parts), fail))

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
    print("autobahn: FAIL: the server died during the run")
    ok = False
print("autobahn: %s (report: %s)" % ("PASS" if ok else "FAIL",
                                     os.path.join(os.path.dirname(index), "index.html")))
sys.exit(0 if ok else 1)
EOF
