#!/usr/bin/env python3
"""Writes the checked-in seed corpora under fuzz/corpus/<target>/.

Seeds are real protocol data (RFC 6455 / RFC 7692 examples, a browser's handshake and
deflate offer, room protocol requests) laid out in each target's input format, which the
target's source documents. Run from anywhere: `python3 fuzz/make_corpus.py`. The output is
deterministic; CI fuzzes over a temporary copy and never writes here.
"""

import os
import shutil
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7


def u16(n):
    return struct.pack("<H", n)


def lp(data):
    if isinstance(data, str):
        data = data.encode()
    assert len(data) < 65536
    return u16(len(data)) + data


def frame(opcode, payload=b"", fin=True, mask=None, rsv1=False):
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + payload
    return head + payload


def close_payload(code, reason=""):
    return struct.pack(">H", code) + reason.encode()


def deflate_message(data, wbits=15, compressor=None):
    c = compressor or zlib.compressobj(6, zlib.DEFLATED, -max(wbits, 9))
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---- frame: raw header bytes ----

def frame_seeds():
    seeds = {
        "rfc_unmasked_hello": bytes.fromhex("810548656c6c6f"),
        "rfc_masked_hello": bytes.fromhex("818537fa213d7f9f4d5158"),
        "rfc_fragment_start": bytes.fromhex("010348656c"),
        "rfc_ping": bytes.fromhex("890548656c6c6f"),
        "rfc_masked_pong": bytes.fromhex("8a8537fa213d7f9f4d5158"),
        "rfc_256_binary": bytes.fromhex("827e0100"),
        "rfc_64k_binary": bytes.fromhex("827f0000000000010000"),
        "masked_64bit_length": bytes.fromhex("82ff000000000001000037fa213d"),
        "close_1000": frame(0x8, close_payload(1000, "bye"), mask=KEY),
        "compressed_rsv1": bytes.fromhex("c107f248cdc9c90700"),
        "non_minimal_16bit": bytes.fromhex("817e0005") + b"Hello",
    }
    for name, data in seeds.items():
        write("frame", name, data)


# ---- connection_server / connection_client: prefix + stream (see fuzz/src/stream.rs) ----

def prefix(flags=0, bits=0x77, chunks=(255,), close_after=0):
    assert 1 <= len(chunks) <= 8
    plan = (len(chunks) - 1) | (close_after << 3)
    return bytes([flags, bits, plan]) + bytes(chunks)


def connection_seeds(target, mask):
    m = KEY if mask else None

    def msg(opcode, payload=b"", **kw):
        return frame(opcode, payload, mask=m, **kw)

    hello = msg(0x1, "Hello") + msg(0x9, "ping") + msg(0x8, close_payload(1000, "done"))
    write(target, "hello_ping_close_bytewise", prefix(chunks=(0,)) + hello)
    write(target, "hello_ping_close_whole", prefix(chunks=(0x90,)) + hello)
    fragmented = (
        msg(0x1, "Hel", fin=False)
        + msg(0x9, "in between")
        + msg(0x0, "lo, ", fin=False)
        + msg(0x0, "κόσμε".encode())
    )
    write(target, "fragmented_text_with_ping", prefix(chunks=(2, 6, 40)) + fragmented)
    binary = msg(0x2, bytes(range(256)) * 2) + msg(0xA, "pong") + msg(0x8, close_payload(1001, "going away"))
    write(target, "binary_16bit_length", prefix(chunks=(100, 0x81)) + binary)
    bad_utf8 = msg(0x1, "κόσμε".encode() + bytes([0xF4, 0x90, 0x80, 0x80]) + b"edited", fin=False)
    write(target, "invalid_utf8_fails_fast", prefix(chunks=(3,)) + bad_utf8)
    # Driver actions: message, ping and close after the first chunk; the peer answers.
    answers = msg(0xA, "driver ping") + msg(0x1, "discarded after our close") + msg(0x8, close_payload(1000))
    write(target, "our_close_then_peer_close", prefix(flags=0xE0, chunks=(1, 30), close_after=0) + answers)
    too_big = msg(0x2, b"x" * 1000, fin=False) + b"".join(msg(0x0, b"y" * 1000, fin=i == 4) for i in range(5))
    write(target, "message_over_small_limit", prefix(flags=0x10, chunks=(0x82,)) + too_big)

    # permessage-deflate (flags bit0), RFC 7692 §7.2.3 "Hello" and context takeover.
    hello_z = deflate_message(b"Hello")
    write(target, "deflate_rfc_hello", prefix(flags=0x01 | 0x06, chunks=(255,)) + msg(0x1, hello_z, rsv1=True))
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = deflate_message(b"Hello, Hello, Hello", compressor=c)
    second = deflate_message(b"Hello, Hello, Hello again", compressor=c)
    takeover = msg(0x1, first, rsv1=True) + msg(0x1, second, rsv1=True)
    write(target, "deflate_context_takeover", prefix(flags=0x01 | 0x08, chunks=(4, 9)) + takeover)
    z = deflate_message(b"abcdefgh" * 200, wbits=10)
    split = msg(0x2, z[:5], fin=False, rsv1=True) + msg(0x9, "") + msg(0x0, z[5:])
    write(target, "deflate_fragmented_window_10", prefix(flags=0x01 | 0x06, bits=0x22, chunks=(7,)) + split)
    write(target, "deflate_corrupt", prefix(flags=0x07) + msg(0x2, b"\xff" * 20, rsv1=True))


# ---- handshake: raw request (or response) bytes ----

def handshake_seeds():
    rfc = (
        "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    browser = (
        "GET /ws HTTP/1.1\r\nHost: localhost:9001\r\nConnection: Upgrade\r\nPragma: no-cache\r\n"
        "Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0\r\n"
        "Upgrade: websocket\r\nOrigin: http://localhost:8080\r\nSec-WebSocket-Version: 13\r\n"
        "Accept-Encoding: gzip, deflate, br\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
        "Sec-WebSocket-Protocol: wsedge.v1\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    firefox = browser.replace("Connection: Upgrade", "Connection: keep-alive, Upgrade").replace(
        "permessage-deflate; client_max_window_bits",
        'permessage-deflate; server_max_window_bits="10"; client_max_window_bits=12, permessage-deflate',
    )
    seeds = {
        "rfc6455_request": rfc,
        "chrome_request_with_deflate": browser,
        "firefox_like_two_offers": firefox,
        "old_version": rfc.replace("Version: 13", "Version: 8"),
        "post_upgrade": rfc.replace("GET", "POST"),
        "api_publish": "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k3y\r\n"
        'Content-Type: application/json\r\nContent-Length: 31\r\n\r\n{"room":"lobby","data":{"a":1}}',
        "healthz_http10": "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "chunked_body": "POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "server_101": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n",
    }
    for name, text in seeds.items():
        write("handshake", name, text.encode())


# ---- deflate: see fuzz/fuzz_targets/deflate.rs for the layout ----

def deflate_seed(header, response, pieces, messages, flags=0x02, server_bits=15, client_bits=15,
                 window=15, level=6, limit=1000):
    out = bytes([flags, server_bits, client_bits, window - 8, level]) + u16(limit)
    out += lp(header) + lp(response) + bytes([len(pieces)])
    for p in pieces:
        out += lp(p)
    for m in messages:
        out += lp(m)
    return out


def deflate_seeds():
    hello = bytes.fromhex("f248cdc9c90700")
    stored = bytes.fromhex("000500faff48656c6c6f00")
    two_blocks = bytes.fromhex("f248050000 00ffffcac9c90700".replace(" ", ""))
    seeds = {
        "chrome_offer": deflate_seed("permessage-deflate; client_max_window_bits",
                                     "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                                     [hello], [b"Hello", b"Hello"]),
        "firefox_offer_dedicated": deflate_seed("permessage-deflate", "permessage-deflate", [stored],
                                                [b"x" * 300], flags=0x01 | 0x02),
        "two_offers_quoted": deflate_seed(
            'permessage-deflate; server_max_window_bits="10"; client_max_window_bits=9, permessage-deflate',
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            [hello[:3], hello[3:]], [b"abcabcabc" * 20], window=10, server_bits=12, client_bits=10),
        "bad_params_declined": deflate_seed(
            "permessage-deflate; server_max_window_bits=7, x-webkit-deflate-frame, permessage-deflate; foo",
            "permessage-deflate; client_max_window_bits", [two_blocks], [b""], flags=0x06),
        "bomb_over_limit": deflate_seed("permessage-deflate; client_no_context_takeover", "x-other",
                                        [deflate_message(b"\x00" * 200000)], [], limit=4096),
        "window_8": deflate_seed("permessage-deflate; client_max_window_bits=8; server_max_window_bits=8",
                                 "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
                                 [deflate_message(bytes(range(256)) * 8, wbits=9)],
                                 [bytes(range(256)) * 8], window=8, flags=0x06, limit=4096),
    }
    for name, data in seeds.items():
        write("deflate", name, data)


# ---- roundtrip: see fuzz/fuzz_targets/roundtrip.rs for the layout ----

def roundtrip_seed(flags, items, bits=0xFF, threshold=0, level=6, chunks=(), close=None):
    out = bytes([flags, bits, threshold, level, len(chunks)])
    for c in chunks:
        out += u16(c)
    if close is not None:
        out += u16(close[0]) + lp(close[1])
    for tag, payload in items:
        out += bytes([tag]) + payload
    return out


def roundtrip_seeds():
    text = lambda s, tag=0: (tag, lp(s))
    binary = lambda b, tag=1: (tag, lp(b))
    ping = lambda p: (3, lp(p))
    repeated = lambda t, pattern, n, tag=2: (tag, bytes([t, pattern]) + u16(n))
    seeds = {
        "server_plain": roundtrip_seed(0x00, [text("Hello"), binary(bytes(range(200))), ping("p")], chunks=(1,)),
        "client_plain_close": roundtrip_seed(0x11, [text("κόσμε"), binary(b"")], chunks=(3, 50),
                                              close=(1000, "bye")),
        "server_deflate_shared_pool": roundtrip_seed(
            0x02 | 0x04 | 0x08, [text("Hello " * 20, tag=0x10), repeated(1, 0, 3000, tag=0x12), ping("")]),
        "server_fanout_windows": roundtrip_seed(
            0x02 | 0x04, [text("fan out " * 30, tag=0x20), binary(b"\x00" * 500, tag=0x21),
                          repeated(0, 7, 20000, tag=0x22)], bits=0x9A, threshold=64, chunks=(1000, 7)),
        "client_deflate_takeover": roundtrip_seed(
            0x01 | 0x02, [text("Hello"), text("Hello"), repeated(1, 0, 500)], bits=0x8F, close=(4000, "private")),
        "server_deflate_dedicated_incompressible": roundtrip_seed(
            0x02, [binary(bytes((i * 131 + 7) % 256 for i in range(600))), text("")], threshold=0, level=9),
    }
    for name, data in seeds.items():
        write("roundtrip", name, data)


# ---- rooms_protocol: see fuzz/fuzz_targets/rooms_protocol.rs for the layout ----

def rooms_seeds():
    def open_(slot):
        return bytes([0, slot])

    def close(slot):
        return bytes([1, slot])

    def text(slot, s):
        return bytes([2, slot]) + lp(s)

    def advance(steps, tick=True):
        return bytes([5]) + u16(steps) + bytes([1 if tick else 0])

    def http(method, path_index, auth, body):
        return bytes([7, method, path_index, auth, 0]) + lp(body)

    chat = (
        bytes([1])
        + open_(0) + open_(1) + open_(2)
        + text(0, '{"id":1,"op":"join","room":"lobby:1","presence":true}')
        + text(1, '{"id":"b","op":"join","room":"lobby:1"}')
        + text(1, '{"id":2,"op":"publish","room":"lobby:1","data":{"text":"hi"}}')
        + text(0, '{"op":"publish","room":"lobby:1","data":"no echo","echo":false}')
        + text(1, '{"id":3,"op":"publish","room":"lobby:1","data":[1,2],"ephemeral":true}')
        + text(2, '{"id":4,"op":"presence","room":"lobby:1"}')
        + text(0, '{"id":5,"op":"history","room":"lobby:1","limit":2}')
        + text(1, '{"id":6,"op":"leave","room":"lobby:1"}')
        + text(2, '{"id":7,"op":"ping"}')
        + close(0)
        + advance(200)
    )
    recovery = (
        bytes([1])
        + open_(0) + open_(1)
        + text(0, '{"id":1,"op":"join","room":"a"}')
        + text(1, '{"id":1,"op":"join","room":"a","presence":true}')
        + text(0, '{"id":2,"op":"publish","room":"a","data":1}')
        + text(0, '{"id":3,"op":"publish","room":"a","data":2}')
        + close(1) + open_(1)
        + text(1, '{"id":9,"op":"join","room":"a","since":{"epoch":"x","offset":1}}')
        + advance(100, tick=True)
        + text(0, '{"id":4,"op":"leave","room":"a"}')
        + advance(300, tick=True)
    )
    api = (
        bytes([0])
        + open_(3)
        + text(3, '{"id":1,"op":"join","room":"b"}')
        + http(1, 0, 1, b'{"room":"b","data":{"from":"backend"}}')
        + http(1, 0, 1, b'{"room":"new-room","data":null}')
        + http(1, 0, 2, b'{"room":"b","data":1}')
        + http(0, 1, 1, b"")
        + http(0, 5, 0, b"")
        + text(3, '{"id":2,"op":"publish","room":"unjoined","data":"x"}')
        + advance(250)
    )
    abuse = bytes([1]) + open_(4) + b"".join(
        text(4, s) for s in ['not json', '{"id":{"x":1}}', '{"id":1,"op":"dance"}', '[1]',
                             '{"id":1e400,"op":"ping"}', '{"id":2,"op":"join","room":"bad room"}',
                             '{"op":"join"}', '{"id":3,"op":"ping"}']
    ) + bytes([4, 4]) + lp(b"\x00binary")
    limits = bytes([1]) + open_(0) + b"".join(
        text(0, '{"id":%d,"op":"join","room":"%s"}' % (i, r)) for i, r in enumerate("abcde")
    ) + b"".join(
        text(0, '{"id":%d,"op":"publish","room":"a","data":"%s"}' % (10 + i, "d" * (50 * i))) for i in range(6)
    )
    for name, data in {"chat": chat, "recovery": recovery, "backend_api": api, "abuse": abuse,
                       "limits": limits}.items():
        write("rooms_protocol", name, data)


# ---- access: "PATTERN\nREST" (origin pattern or CIDR, then an Origin, node or header) ----

def access_seeds():
    for name, data in {
        "wildcard_subdomain": "https://*.example.com\nhttps://a.b.example.com",
        "exact_default_port": "https://app.example.com\nhttps://APP.example.com:443",
        "null_origin": "null\nnull",
        "ipv6_origin": "http://[::1]:8080\nhttp://[::1]:8080",
        "xff_chain": "10.0.0.0/8\n1.1.1.1, 203.0.113.1, 10.0.0.2",
        "forwarded_ipv6_quoted": '2001:db8::/32\nfor="[2001:db8:cafe::17]:4711";proto=https, for=127.0.0.1',
        "forwarded_obfuscated": '127.0.0.1\nfor=192.0.2.43, for=unknown;host="a,b", for=_hidden',
        "node_with_port": "https://evil-example.com\n192.0.2.1:8080",
    }.items():
        write("access", name, data.encode())


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    frame_seeds()
    connection_seeds("connection_server", mask=True)
    connection_seeds("connection_client", mask=False)
    handshake_seeds()
    deflate_seeds()
    roundtrip_seeds()
    rooms_seeds()
    access_seeds()


if __name__ == "__main__":
    main()
