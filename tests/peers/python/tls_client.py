#!/usr/bin/env python3
"""A Python `websockets` client of roomcast over TLS (wss://), for the TLS tests.

    tls_client.py WSS_URL CAFILE            the protocol over wss: hello, join, publish
    tls_client.py WSS_URL CAFILE --hold     connect, print the certificate's SHA-256, wait
                                            for a line on stdin, then check the connection
                                            still answers and print a new connection's

Prints "fingerprint AB:CD:..." lines and "all scenarios passed" on success.
"""
import asyncio
import hashlib
import json
import ssl
import sys
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def fingerprint(ws):
    der = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


async def request(ws, req, pushes=None):
    await ws.send(json.dumps(req))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m.get("ref") == req.get("ref"):
            return m
        if pushes is not None:
            pushes.append(m)


async def main(url, cafile, hold):
    context = ssl.create_default_context(cafile=cafile)
    async with connect(url, ssl=context, compression=None) as ws:
        print("fingerprint", fingerprint(ws), flush=True)
        w = await request(ws, {"type": "hello", "client": "tls", "ref": 1})
        assert w["type"] == "welcome", w
        j = await request(ws, {"type": "join", "room": "secure", "ref": 2})
        assert j["type"] == "joined", j
        big = "x" * 60_000  # a message across several TLS records (16 KiB each)
        pushes = []
        a = await request(ws, {"type": "publish", "room": "secure", "data": big, "ref": 3}, pushes)
        assert a["type"] == "ack", a
        # The publisher's own message comes before its ack.
        assert [m["data"] for m in pushes if m["type"] == "message"] == [big], pushes
        # A burst far over 64 KiB, and one frame of about 600 KB (a history reply): each
        # crosses many TLS records and rustls's default buffer limit.
        for i in range(10):
            await ws.send(json.dumps({"type": "publish", "room": "secure", "data": big, "ref": 10 + i}))
        acks = 0
        while acks < 10:
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            acks += m["type"] == "ack"
        h = await request(ws, {"type": "history", "room": "secure", "limit": 11, "ref": 30})
        assert h["type"] == "history" and [m["data"] for m in h["messages"]] == [big] * 11, len(str(h))
        if hold:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            p = await request(ws, {"type": "ping", "ref": 4})
            assert p["type"] == "pong", p
            print("old connection still answers", flush=True)
            async with connect(url, ssl=context, compression=None) as ws2:
                print("fingerprint", fingerprint(ws2), flush=True)
    if not hold:
        # Closed by the server (an API disconnect over https): the close frame arrives
        # with its code, before the TLS session's end.
        async with connect(url, ssl=context, compression=None) as ws:
            w = await request(ws, {"type": "hello", "client": "evicted", "ref": 1})
            assert w["type"] == "welcome", w
            api = url.replace("wss://", "https://").rsplit("/", 1)[0] + "/api/disconnect"
            body = json.dumps({"client": "evicted", "code": 4003, "reason": "bye"}).encode()
            req = urllib.request.Request(api, data=body, headers={"content-type": "application/json"})
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: urllib.request.urlopen(req, context=context, timeout=10).read()
            )
            try:
                await asyncio.wait_for(ws.recv(), 10)
                raise AssertionError("still open after the disconnect")
            except ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 4003, e
    print("all scenarios passed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--hold" in sys.argv[3:]))
