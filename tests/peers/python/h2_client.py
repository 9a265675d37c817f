#!/usr/bin/env python3
"""WebSockets over HTTP/2 (RFC 8441) to roomcast, with the `h2` library (hyper-h2), for
the HTTP/2 tests. Every WebSocket is a stream of one connection.

    h2_client.py URL [CAFILE]             URL is https://HOST:PORT (TLS, ALPN h2) or
                                          http://HOST:PORT (cleartext, prior knowledge)
    h2_client.py --refusals URL [CAFILE]  bad extended CONNECTs, each refused with its
                                          status on a stream, the connection still up
    h2_client.py --slow URL [CAFILE]      two WebSockets in a room on one connection, one
                                          whose stream window is never given back: the
                                          other gets every message, the connection goes on
    h2_client.py --slow-many URL [CAFILE] the same with five stalled streams: the node
                                          closes the connection
    h2_client.py --limits URL [CAFILE]    with max_connections_per_ip = 2: a third
                                          WebSocket on the connection gets 429
    h2_client.py --resets URL [CAFILE]    15 CONNECTs to new raw rooms, each reset at once
    h2_client.py --idle URL [CAFILE]      one request, then idle until the GOAWAY
    h2_client.py --drain URL [CAFILE]     a WebSocket up, then "ready"; when the node
                                          drains, a GOAWAY with NO_ERROR

Scenarios, all on one connection:
  1. three /ws streams: hello, join a room; one publishes; all three get the message;
  2. a GET /healthz and an SSE stream beside them;
  3. a raw room on two streams: what one sends, the other gets;
  4. each WebSocket closed with 1000: the close echoed, the stream ended.
Prints "all scenarios passed" on success.
"""
import json
import os
import socket
import ssl
import struct
import sys
import time
from urllib.parse import urlparse

import h2.config
import h2.connection
import h2.events
import h2.settings


def ws_frame(opcode, payload):
    """A masked client frame (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def parse_frames(buf):
    """Unmasked server frames at the front of buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        assert b1 & 0x80 == 0, "a server frame must not be masked"
        n, at = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            break
        assert b0 & 0x80, "fragmented frames are not expected here"
        out.append((b0 & 0x0F, bytes(buf[at : at + n])))
        buf = buf[at + n :]
    return out, buf


class Client:
    def __init__(self, url, cafile):
        u = urlparse(url)
        self.authority = u.netloc
        self.scheme = u.scheme
        sock = socket.create_connection((u.hostname, u.port), timeout=10)
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.goaway = None  # the error code of the server's GOAWAY
        self.inbuf = b""
        self.streams = {}  # stream id -> {"status", "headers", "data", "ended", "frames"}
        # Until the server's SETTINGS come, extended CONNECT is not known to be allowed.
        while not self.conn.remote_settings.enable_connect_protocol:
            self.pump()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self):
        """Reads, and hands the h2 library one whole frame at a time: after a GOAWAY it
        takes no more frames (its connection is closed), so nothing after one is fed."""
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.inbuf += data
        while len(self.inbuf) >= 9 and self.goaway is None:
            n = 9 + int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < n:
                break
            frame, self.inbuf = self.inbuf[:n], self.inbuf[n:]
            for ev in self.conn.receive_data(frame):
                self.event(ev)
        self.flush()

    def event(self, ev):
        s = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            s["headers"] = dict((k.decode(), v.decode()) for k, v in ev.headers)
            s["status"] = int(s["headers"][":status"])
        elif isinstance(ev, h2.events.DataReceived):
            s["data"] += ev.data
            if s.get("stalled"):
                # The connection's window is given back, the stream's is not: this
                # stream alone stops taking data, as a tab that stopped reading would.
                self.conn.increment_flow_control_window(ev.flow_controlled_length)
            else:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
            s["ended"] = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev.error_code

    def wait(self, cond, what, timeout=10):
        deadline = time.time() + timeout
        while not cond():
            if time.time() > deadline:
                raise TimeoutError(what)
            self.pump()

    def request(self, method, path, extra=(), protocol=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method)]
        if protocol:
            headers.append((":protocol", protocol))
        headers += [(":scheme", self.scheme), (":path", path), (":authority", self.authority)]
        headers += list(extra)
        self.streams[sid] = {"status": None, "headers": {}, "data": b"", "ended": False}
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    def websocket(self, path):
        sid = self.request(
            "CONNECT", path, [("sec-websocket-version", "13")], protocol="websocket", end=False
        )
        self.wait(lambda: self.streams[sid]["status"] is not None, "the CONNECT's answer")
        assert self.streams[sid]["status"] == 200, self.streams[sid]
        assert "sec-websocket-accept" not in self.streams[sid]["headers"]
        return sid

    def send(self, sid, opcode, payload):
        """One WebSocket frame, in DATA frames as large as the peer and the flow
        control windows allow."""
        data = ws_frame(opcode, payload)
        while data:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room == 0:
                self.pump()  # a WINDOW_UPDATE
                continue
            self.conn.send_data(sid, data[:room])
            data = data[room:]
            self.flush()

    def frames(self, sid):
        out, self.streams[sid]["data"] = parse_frames(self.streams[sid]["data"])
        return out

    def next_json(self, sid, timeout=10):
        """The next text frame of a stream, parsed."""
        pending = self.streams[sid].setdefault("queue", [])
        deadline = time.time() + timeout
        while True:
            for op, p in self.frames(sid):
                pending.append((op, p))
            while pending:
                op, p = pending.pop(0)
                if op == 1:
                    return json.loads(p)
            if time.time() > deadline:
                raise TimeoutError(f"no message on stream {sid}")
            self.pump()

    def reply_to(self, sid, ref, timeout=10):
        while True:
            m = self.next_json(sid, timeout)
            if m.get("ref") == ref:
                return m


def main(url, cafile):
    c = Client(url, cafile)
    # 1. three WebSockets on one connection.
    socks = [c.websocket("/ws") for _ in range(3)]
    for i, sid in enumerate(socks):
        c.send(sid, 1, json.dumps({"type": "hello", "client": f"h2-{i}", "ref": 1}).encode())
        w = c.reply_to(sid, 1)
        assert w["type"] == "welcome", w
        c.send(sid, 1, json.dumps({"type": "join", "room": "h2room", "ref": 2}).encode())
        j = c.reply_to(sid, 2)
        assert j["type"] == "joined", j
    big = "y" * 60_000  # several DATA frames (16 KiB each)
    c.send(socks[0], 1, json.dumps({"type": "publish", "room": "h2room", "data": big, "ref": 3}).encode())
    for sid in socks:
        while True:
            m = c.next_json(sid)
            if m["type"] == "message":
                assert m["data"] == big, len(m["data"])
                break
    print("three websockets on one connection got the message", flush=True)
    # 2. plain requests and an SSE stream beside them.
    h = c.request("GET", "/healthz")
    c.wait(lambda: c.streams[h]["ended"], "healthz")
    assert c.streams[h]["status"] == 200 and c.streams[h]["data"].startswith(b"ok"), c.streams[h]
    sse = c.request("GET", "/sse?client=h2sse&room=h2room", [("accept", "text/event-stream")])
    c.wait(lambda: b"welcome" in c.streams[sse]["data"], "the SSE welcome")
    assert c.streams[sse]["status"] == 200
    c.send(socks[1], 1, json.dumps({"type": "publish", "room": "h2room", "data": "to sse", "ref": 4}).encode())
    c.wait(lambda: b"to sse" in c.streams[sse]["data"], "the message on SSE")
    print("healthz and SSE on the same connection", flush=True)
    # 3. a raw room: what one stream sends, the other gets.
    a, b = c.websocket("/rooms/h2raw"), c.websocket("/rooms/h2raw")
    c.send(a, 2, b"\x00\x01raw bytes")
    c.wait(lambda: len(c.streams[b]["data"]) >= 2 + 11, "the raw frame")
    [(op, p)] = c.frames(b)
    assert (op, p) == (2, b"\x00\x01raw bytes"), (op, p)
    print("a raw room over two streams", flush=True)
    # 4. closing handshakes, one stream at a time.
    for sid in socks + [a, b]:
        c.send(sid, 8, struct.pack("!H", 1000) + b"bye")
        c.wait(lambda: c.streams[sid]["ended"], f"the end of stream {sid}")
        frames = [f for f in parse_frames(c.streams[sid]["data"])[0] if f[0] == 8]
        assert frames and frames[-1][1][:2] == struct.pack("!H", 1000), frames
        # Our side ends too, as a TCP client's FIN would (RFC 8441 section 5.1).
        c.conn.end_stream(sid)
        c.flush()
    print("all closed with 1000", flush=True)
    print("all scenarios passed", flush=True)


def refusals(url, cafile):
    c = Client(url, cafile)
    cases = [
        # (method, path, headers, :protocol, status, a header the refusal must carry)
        ("GET", "/ws", [("sec-websocket-version", "13")], None, 405, ("allow", "CONNECT")),
        ("CONNECT", "/ws", [], "websocket", 400, ("sec-websocket-version", "13")),
        ("CONNECT", "/ws", [("sec-websocket-version", "13")], "webtransport", 400, None),
        ("CONNECT", "/rooms/bad%20name", [("sec-websocket-version", "13")], "websocket", 400, None),
        ("CONNECT", "/ws", [("sec-websocket-version", "13"), ("origin", "https://evil.example")],
         "websocket", 403, None),
    ]
    for method, path, extra, protocol, status, header in cases:
        sid = c.request(method, path, extra, protocol=protocol, end=method != "CONNECT")
        c.wait(lambda: c.streams[sid]["ended"] or c.streams[sid]["status"] is not None, path)
        got = c.streams[sid]
        assert got["status"] == status, (method, path, protocol, got)
        assert "upgrade" not in got["headers"], got
        if header:
            assert got["headers"].get(header[0]) == header[1], got
        print(f"{method} {path} :protocol={protocol}: {status}", flush=True)
    # The connection still serves a WebSocket after all that.
    sid = c.websocket("/ws")
    c.send(sid, 1, json.dumps({"type": "hello", "client": "after", "ref": 1}).encode())
    assert c.reply_to(sid, 1)["type"] == "welcome"
    print("all scenarios passed", flush=True)


def slow(url, cafile, stalled_count=1):
    """`stalled_count` streams that stop taking data, and one that reads, in one room."""
    c = Client(url, cafile)
    stalled = [c.websocket("/ws") for _ in range(stalled_count)]
    reader = c.websocket("/ws")
    for i, sid in enumerate(stalled + [reader]):
        c.send(sid, 1, json.dumps({"type": "hello", "client": f"slow-{i}", "ref": 1}).encode())
        assert c.reply_to(sid, 1)["type"] == "welcome"
        c.send(sid, 1, json.dumps({"type": "join", "room": "slow", "ref": 2}).encode())
        assert c.reply_to(sid, 2)["type"] == "joined"
    for sid in stalled:
        c.streams[sid]["stalled"] = True
    n, data = 20, "z" * 30_000
    c.sock.settimeout(30)
    got = 0
    for i in range(n):
        ref = 10 + i
        c.send(reader, 1, json.dumps({"type": "publish", "room": "slow", "data": data, "ref": ref}).encode())
        while True:
            m = c.next_json(reader, 30)
            got += m["type"] == "message" and m["data"] == data
            if m.get("ref") == ref:
                assert m["type"] == "ack", m
                break
    while got < n:
        m = c.next_json(reader, 30)
        got += m["type"] == "message" and m["data"] == data
    assert got == n, got
    print(f"the reading stream got all {n} messages", flush=True)
    if stalled_count <= 4:
        # The node gave up on the stalled one (4008; its close cannot pass the shut
        # window), and the connection with its other stream goes on.
        time.sleep(4)  # past the close timeout (2 s) and a sweep (1 s)
        c.send(reader, 1, json.dumps({"type": "publish", "room": "slow", "data": "after", "ref": 99}).encode())
        while True:
            m = c.next_json(reader, 30)
            if m.get("ref") == 99:
                assert m["type"] == "ack", m
                break
        assert c.goaway is None
        print("the connection and its reading stream go on", flush=True)
    else:
        # More stuck streams than a connection may leave: the node closes the connection.
        try:
            c.wait(lambda: c.goaway is not None, "a GOAWAY", 30)
        except EOFError:
            pass
        print("the connection was closed", flush=True)
    print("all scenarios passed", flush=True)


def limits(url, cafile):
    """Against a node with limits.max_connections_per_ip = 2: two WebSockets on one
    connection, and the third refused with 429 on its stream: each stream counts."""
    c = Client(url, cafile)
    socks = [c.websocket("/ws") for _ in range(2)]
    sid = c.request("CONNECT", "/ws", [("sec-websocket-version", "13")], protocol="websocket", end=False)
    c.wait(lambda: c.streams[sid]["status"] is not None, "the third CONNECT's answer")
    got = c.streams[sid]
    assert got["status"] == 429 and got["headers"].get("retry-after") == "1", got
    print("the third WebSocket: 429", flush=True)
    # The two still work.
    for i, s in enumerate(socks):
        c.send(s, 1, json.dumps({"type": "hello", "client": f"lim-{i}", "ref": 1}).encode())
        assert c.reply_to(s, 1)["type"] == "welcome"
    print("all scenarios passed", flush=True)


def resets(url, cafile):
    """Extended CONNECTs to new raw rooms, each reset in the same write as its HEADERS:
    15, under the 20 resets of streams not yet taken after which h2 (hyper's HTTP/2)
    closes the connection (its defence against rapid resets)."""
    c = Client(url, cafile)
    for i in range(15):
        sid = c.request("CONNECT", f"/rooms/reset-{i}", [("sec-websocket-version", "13")],
                        protocol="websocket", end=False)
        c.conn.reset_stream(sid)
        c.flush()
    # The connection still serves, and the node has had time to see every reset.
    sid = c.websocket("/ws")
    c.send(sid, 1, json.dumps({"type": "hello", "client": "after-resets", "ref": 1}).encode())
    assert c.reply_to(sid, 1)["type"] == "welcome"
    print("all scenarios passed", flush=True)


def idle(url, cafile):
    """One request, then nothing: the node closes the connection with a GOAWAY."""
    c = Client(url, cafile)
    h = c.request("GET", "/healthz")
    c.wait(lambda: c.streams[h]["ended"], "healthz")
    started = time.time()
    c.sock.settimeout(30)
    try:
        c.wait(lambda: c.goaway is not None, "a GOAWAY", 30)
    except EOFError:
        pass
    assert c.goaway == 0, c.goaway
    print(f"GOAWAY after {time.time() - started:.1f} s idle", flush=True)
    print("all scenarios passed", flush=True)


def drain(url, cafile):
    c = Client(url, cafile)
    sid = c.websocket("/ws")
    c.send(sid, 1, json.dumps({"type": "hello", "client": "drain", "ref": 1}).encode())
    assert c.reply_to(sid, 1)["type"] == "welcome"
    print("ready", flush=True)
    c.sock.settimeout(30)
    # The GOAWAY comes first, then the streams' ends. The h2 library takes nothing after a
    # GOAWAY (its connection is closed once one arrives), so this client stops there; the
    # WebSockets' 1001 is checked with another client.
    while c.goaway is None:
        c.pump()
    assert c.goaway == 0, c.goaway  # NO_ERROR: a graceful shutdown
    print("GOAWAY with NO_ERROR", flush=True)
    print("all scenarios passed", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    run = main
    if args and args[0] == "--refusals":
        run, args = refusals, args[1:]
    elif args and args[0] == "--slow":
        run, args = slow, args[1:]
    elif args and args[0] == "--slow-many":
        run, args = (lambda u, c: slow(u, c, 5)), args[1:]
    elif args and args[0] == "--limits":
        run, args = limits, args[1:]
    elif args and args[0] == "--resets":
        run, args = resets, args[1:]
    elif args and args[0] == "--idle":
        run, args = idle, args[1:]
    elif args and args[0] == "--drain":
        run, args = drain, args[1:]
    run(args[0], args[1] if len(args) > 1 else None)
