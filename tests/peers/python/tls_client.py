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

from websockets.asyncio.client import connect


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
        if hold:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            p = await request(ws, {"type": "ping", "ref": 4})
            assert p["type"] == "pong", p
            print("old connection still answers", flush=True)
            async with connect(url, ssl=context, compression=None) as ws2:
                print("fingerprint", fingerprint(ws2), flush=True)
    print("all scenarios passed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--hold" in sys.argv[3:]))
