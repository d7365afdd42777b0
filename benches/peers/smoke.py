#!/usr/bin/env python3
"""Smoke test for the benchmark peers: starts each server on a free loopback
port, checks echo and room broadcast for real, stops it.

Needs Python 3 with `websockets` (>= 13, the asyncio API), e.g. the venv the
wsedge tests use:
    target/py-websockets-venv/websockets-17.4/bin/python benches/peers/smoke.py
Run benches/peers/build.sh first. Exit status 0 when every check passed.
Optional args: names of the peers to test (default: all), e.g. `ws-echo`.
"""
import asyncio
import os
import re
import subprocess
import sys
import time

from websockets.asyncio.client import connect

HERE = os.path.dirname(os.path.abspath(__file__))
RUST = os.path.join(HERE, "rust", "target", "release")
NODE = os.path.join(HERE, "node")

# name -> (kind, argv without --listen)
PEERS = {
    "tokio-tungstenite-echo": ("echo", [os.path.join(RUST, "tokio-tungstenite-echo")]),
    "tokio-tungstenite-broadcast": ("broadcast", [os.path.join(RUST, "tokio-tungstenite-broadcast")]),
    "fastwebsockets-echo": ("echo", [os.path.join(RUST, "fastwebsockets-echo")]),
    "fastwebsockets-broadcast": ("broadcast", [os.path.join(RUST, "fastwebsockets-broadcast")]),
    "ws-echo": ("echo", ["node", os.path.join(NODE, "echo.js")]),
    "ws-broadcast": ("broadcast", ["node", os.path.join(NODE, "broadcast.js")]),
}
RUNTIMES = {"rust": [["--workers", "1"], []], "node": [["--workers", "1"]]}

TIMEOUT = 5


def start(argv):
    proc = subprocess.Popen(argv + ["--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"no 'listening on' line from {argv}: {line!r}")
    return proc, m.group(1)


async def check_echo(addr):
    uri = f"ws://{addr}/"
    async with connect(uri, max_size=None, compression=None) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello"
        await ws.send(b"\x00\x01\xff")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\x01\xff"
        big = os.urandom(1 << 20)  # 1 MiB binary, 64-bit length header
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == big
        text = "é" * 8192  # 16 KiB of 2-byte UTF-8
        await ws.send(text)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == text
        # fragmented text message (3 frames) comes back as one message
        await ws.send(["frag", "ment", "ed"])
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "fragmented"
        # in-flight depth 16: 16 messages queued before reading any
        for i in range(16):
            await ws.send(f"m{i}")
        got = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(16)]
        assert got == [f"m{i}" for i in range(16)], got
        # ping is answered
        pong = await ws.ping(b"p")
        await asyncio.wait_for(pong, TIMEOUT)
        await ws.close(1000, "bye")
        # the server answered the close handshake
        assert ws.close_code == 1000 and ws.protocol.close_rcvd is not None, (ws.close_code, ws.protocol.close_rcvd)
    return "echo: text, binary, 1 MiB, 16 KiB UTF-8, fragmented, depth 16, ping, close 1000"


async def drain(ws, n):
    return [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(n)]


async def silent(ws, secs=0.3):
    try:
        msg = await asyncio.wait_for(ws.recv(), secs)
        return msg
    except asyncio.TimeoutError:
        return None


async def check_broadcast(addr):
    base = f"ws://{addr}"
    # 3 members of /room-a (one joins with a query string: same room),
    # 1 member of /room-b, 1 member of /.
    a = [await connect(f"{base}{p}", compression=None) for p in ("/room-a", "/room-a", "/room-a?x=1")]
    b = await connect(f"{base}/room-b", compression=None)
    root = await connect(f"{base}/", compression=None)
    await asyncio.sleep(0.1)  # the servers register members right after the handshake
    try:
        # everyone in room-a sends one message; everyone in room-a gets all three
        await a[0].send("from-0")
        await a[1].send(b"\x01from-1")
        await a[2].send("from-2")
        for i, ws in enumerate(a):
            got = await drain(ws, 3)
            assert sorted(map(repr, got)) == sorted(map(repr, ["from-0", b"\x01from-1", "from-2"])), (i, got)
        # per-sender order: 50 messages from one member arrive in order at every member
        for k in range(50):
            await a[1].send(f"seq-{k}")
        for i, ws in enumerate(a):
            got = await drain(ws, 50)
            assert got == [f"seq-{k}" for k in range(50)], (i, got[:5])
        # other rooms saw nothing
        assert await silent(b) is None, "room-b got room-a traffic"
        assert await silent(root) is None, "/ got room-a traffic"
        # a lone member gets its own message back; '/' is a room too
        await b.send("only-b")
        assert await asyncio.wait_for(b.recv(), TIMEOUT) == "only-b"
        await root.send("only-root")
        assert await asyncio.wait_for(root.recv(), TIMEOUT) == "only-root"
        for ws in a:
            assert await silent(ws, 0.1) is None, "room-a got other rooms' traffic"
        # a member that leaves stops receiving; the others keep going
        await a[2].close()
        await a[0].send("after-leave")
        for ws in a[:2]:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "after-leave"
        # ping is answered while in a room
        await asyncio.wait_for(await a[0].ping(), TIMEOUT)
    finally:
        for ws in a + [b, root]:
            await ws.close()
    # close handshake completed
    assert a[0].close_code == 1000, a[0].close_code
    # the room is usable again after everyone left
    async with connect(f"{base}/room-a", compression=None) as ws:
        await ws.send("again")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "again"
    return "broadcast: 3 in /room-a (all get all 3 incl. own), order of 50, room isolation, '/', leave, ping, close"


async def main(names):
    failed = 0
    for name in names:
        kind, argv = PEERS[name]
        runtime = "node" if argv[0] == "node" else "rust"
        for extra in RUNTIMES[runtime]:
            label = f"{name} {' '.join(extra) or '(default workers)'}"
            proc, addr = start(argv + extra)
            t0 = time.monotonic()
            try:
                what = await (check_echo(addr) if kind == "echo" else check_broadcast(addr))
                print(f"ok   {label:48s} {addr:18s} {time.monotonic() - t0:5.2f}s  {what}")
            except Exception as e:  # noqa: BLE001 - report and go on to the next peer
                failed += 1
                print(f"FAIL {label:48s} {addr:18s} {type(e).__name__}: {e}")
            finally:
                if proc.poll() is not None:
                    failed += 1
                    print(f"FAIL {label}: server exited with {proc.returncode}")
                proc.terminate()
                proc.wait(5)
    return failed


if __name__ == "__main__":
    names = sys.argv[1:] or list(PEERS)
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        sys.exit(f"unknown peers {unknown}; known: {list(PEERS)}")
    sys.exit(1 if asyncio.run(main(names)) else 0)
