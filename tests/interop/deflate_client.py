"""permessage-deflate interop client for tests/deflate_interop.rs.

Connects to URL with Python's `websockets` offering permessage-deflate, sends a fixed set
of messages one at a time, waits for each echo and checks it is identical. Prints one JSON
report on stdout: the extension as negotiated (the raw response header, and the parameters
websockets agreed to) and, per message, the bytes that crossed the wire each way and
whether the first frame had RSV1 ("compressed", RFC 7692 §6). The wire is read from the
socket itself, so the report does not depend on websockets' internals.

Usage: deflate_client.py URL [--windows]
  --windows  offer server_max_window_bits=10; client_max_window_bits=9 instead of the
             default offer (permessage-deflate; client_max_window_bits).
"""

import argparse
import json
import os
import socket
import sys
from urllib.parse import urlparse

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.sync.client import connect

RECV_TIMEOUT = 10  # seconds per echo
RSV1 = 0x40


class WireSocket(socket.socket):
    """A TCP socket that keeps a copy of every byte sent and received."""

    def __init__(self):
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.sent = bytearray()
        self.received = bytearray()

    def sendall(self, data, *args):
        self.sent += data
        return super().sendall(data, *args)

    def recv(self, size, *args):
        data = super().recv(size, *args)
        self.received += data
        return data


def messages():
    """(name, payload) pairs: str is sent as text, bytes as binary."""
    records = [{"id": i, "user": f"user-{i:04}", "online": i % 3 == 0, "score": i * 7} for i in range(16)]
    json_1k = json.dumps({"type": "presence", "room": "lobby", "members": records})
    repetitive = ("wsedge edge server, permessage-deflate interop line. " * 2000)[: 100 * 1024]
    yield "small-text", "hi, edge"
    yield "small-binary", bytes(range(32))
    yield "json-1k", json_1k
    yield "repetitive-100k", repetitive
    yield "random-1m", os.urandom(1 << 20)
    yield "empty-text", ""
    yield "empty-binary", b""
    for i in range(50):
        yield f"json-1k-repeat-{i}", json_1k


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--windows", action="store_true")
    args = parser.parse_args()

    if args.windows:
        options = {"compression": None, "extensions": [ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=9)]}
    else:
        options = {"compression": "deflate"}  # websockets' default offer

    url = urlparse(args.url)
    sock = WireSocket()
    sock.settimeout(RECV_TIMEOUT)
    sock.connect((url.hostname, url.port))
    sock.settimeout(None)

    report = {"websockets": websockets.__version__}
    with connect(args.url, sock=sock, ping_interval=None, max_size=1 << 24, open_timeout=RECV_TIMEOUT, **options) as ws:
        report["response_extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        report["negotiated"] = [
            {
                "server_no_context_takeover": ext.remote_no_context_takeover,
                "client_no_context_takeover": ext.local_no_context_takeover,
                "server_max_window_bits": ext.remote_max_window_bits,
                "client_max_window_bits": ext.local_max_window_bits,
            }
            for ext in ws.protocol.extensions
            if isinstance(ext, PerMessageDeflate)
        ]
        report["messages"] = []
        for name, payload in messages():
            sent_before, received_before = len(sock.sent), len(sock.received)
            ws.send(payload)
            echo = ws.recv(timeout=RECV_TIMEOUT)
            # Nothing else is in flight (no pings), so these bytes are exactly the message
            # and its echo, frame headers included.
            out, back = sock.sent[sent_before:], sock.received[received_before:]
            report["messages"].append(
                {
                    "name": name,
                    "kind": "text" if isinstance(payload, str) else "binary",
                    "size": len(payload.encode() if isinstance(payload, str) else payload),
                    "echoed": type(echo) is type(payload) and echo == payload,
                    "wire_out": len(out),
                    "wire_in": len(back),
                    "rsv1_out": bool(out and out[0] & RSV1),
                    "rsv1_in": bool(back and back[0] & RSV1),
                }
            )
    json.dump(report, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
