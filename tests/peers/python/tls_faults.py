#!/usr/bin/env python3
"""TLS records a well-behaved client never sends, written by hand (Python's ssl module on
memory buffers, so each record goes on the wire exactly as the scenario wants), against
`roomcast serve --tls-self-signed --set server.workers=1 --set limits.exempt_loopback=false
--set limits.max_connections_per_ip=1`.

    tls_faults.py HOST PORT

Scenarios, each followed by a normal connection that must be served (one worker, one
connection allowed per address: a worker stuck in a loop, or a connection slot not given
back, fails the next one):
  handover  the upgrade request and close_notify in one write, five times: the session
            is closed when the connection is handed to its worker
  trailing  on an open WebSocket, close_notify and 4 KiB of garbage in one write: the
            server ends the connection and reads nothing past the close_notify
  corrupt   on an open WebSocket, an application-data record with one bit flipped: the
            server answers with a TLS alert, then closes

Prints "ok SCENARIO" for each and "all scenarios passed" at the end; exits 1 on a failure.
"""
import json
import os
import socket
import ssl
import sys
import time

DEADLINE = 10.0


class Tls:
    """A TLS client whose records are handed to the socket only when the scenario says."""

    def __init__(self, host, port):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=host)
        self.sock = socket.create_connection((host, port), timeout=DEADLINE)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.send(self.records())
                self.receive()
        self.send(self.records())
        self.plain = b""

    def records(self):
        """The records written so far and not yet sent."""
        return self.out.read()

    def send(self, data):
        if data:
            self.sock.sendall(data)

    def receive(self):
        """Reads from the socket into rustls's peer; False at the end of the stream."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.inc.write(data)
        return True

    def seal(self, plaintext):
        """The records carrying `plaintext`, not sent."""
        self.obj.write(plaintext)
        return self.records()

    def close_notify(self):
        """The close_notify record, not sent."""
        try:
            self.obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        return self.records()

    def read_until(self, marker):
        """Decrypted bytes up to and including `marker`."""
        while marker not in self.plain:
            try:
                self.plain += self.obj.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            if not self.receive():
                raise AssertionError(f"closed before {marker!r}: {self.plain!r}")
        end = self.plain.index(marker) + len(marker)
        got, self.plain = self.plain[:end], self.plain[end:]
        return got

    def ended(self):
        """Waits for the server to end the connection; raises if it does not in time."""
        self.sock.settimeout(DEADLINE)
        try:
            while self.receive():
                pass
        except socket.timeout:
            raise AssertionError("the server did not end the connection")


def upgrade(host, port):
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def frame(text):
    """A masked text frame."""
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def websocket(host, port, client):
    """A WebSocket over TLS that said hello and was welcomed."""
    t = Tls(host, port)
    t.send(t.seal(upgrade(host, port)))
    head = t.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    t.send(t.seal(frame(json.dumps({"type": "hello", "client": client, "ref": 1}))))
    t.read_until(b'"welcome"')
    return t


def served(host, port, what):
    """A normal connection after a scenario: retried briefly, as a slot is given back by
    the connection's task once it has seen the end."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            t = websocket(host, port, "after")
            t.sock.close()
            return
        except (AssertionError, OSError, ssl.SSLError) as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"after {what}: no connection served: {e}")
            time.sleep(0.05)


def handover(host, port):
    for _ in range(5):
        t = Tls(host, port)
        t.send(t.seal(upgrade(host, port)) + t.close_notify())
        t.ended()
        served(host, port, "handover")


def trailing(host, port):
    t = websocket(host, port, "trailing")
    t.send(t.close_notify() + os.urandom(4096))
    t.ended()
    served(host, port, "trailing")


def corrupt(host, port):
    t = websocket(host, port, "corrupt")
    record = bytearray(t.seal(frame(json.dumps({"type": "ping", "ref": 2}))))
    record[-1] ^= 1
    t.send(bytes(record))
    alert = None
    try:
        while True:
            try:
                t.obj.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            if not t.receive():
                break
    except ssl.SSLError as e:
        alert = e
    assert alert is not None and "ALERT" in str(alert).upper(), f"no TLS alert: {alert!r}"
    t.ended()
    served(host, port, "corrupt")


def main(host, port):
    for scenario in (handover, trailing, corrupt):
        scenario(host, port)
        print("ok", scenario.__name__, flush=True)
    print("all scenarios passed", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]))
    except AssertionError as e:
        print("FAILED:", e, flush=True)
        sys.exit(1)
