#!/usr/bin/env python3
"""A Python `websockets` client against roomcast's tokens and origin checks.

    auth_client.py WS_URL TOKEN EXPIRED_TOKEN

TOKEN is alice's, allowed to join and publish in `lobby` only; EXPIRED_TOKEN expired.
The server has auth.jwt_secret set and no server.allowed_origins. Prints
"all scenarios passed" on success.
"""
import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def request(ws, req):
    await ws.send(json.dumps(req))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if m.get("ref") == req.get("ref"):
            return m


async def refused_with(url, hello, code):
    async with connect(url, compression=None) as ws:
        reply = await request(ws, hello)
        assert reply["type"] == "error" and reply["code"] == "unauthorized", reply
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("the connection stayed open")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == code, e


async def main(url, token, expired):
    await refused_with(url, {"type": "hello", "client": "alice", "ref": 1}, 4001)
    await refused_with(url, {"type": "hello", "token": expired, "ref": 1}, 4001)
    await refused_with(url, {"type": "hello", "client": "bob", "token": token, "ref": 1}, 4001)

    async with connect(url, compression=None) as ws:
        w = await request(ws, {"type": "hello", "token": token, "ref": 1})
        assert w["type"] == "welcome" and w["client"] == "alice", w
        j = await request(ws, {"type": "join", "room": "lobby", "ref": 2})
        assert j["type"] == "joined", j
        f = await request(ws, {"type": "join", "room": "secret", "ref": 3})
        assert f["type"] == "error" and f["code"] == "forbidden" and f["ref"] == 3, f
        a = await request(ws, {"type": "publish", "room": "lobby", "data": "hi", "ref": 4})
        assert a["type"] == "ack", a

    # A page of another origin is refused at the handshake; no Origin is a program.
    try:
        async with connect(url, origin="https://evil.example", compression=None):
            raise AssertionError("a handshake from another origin was accepted")
    except InvalidStatus as e:
        assert e.response.status_code == 403, e
    host = url.split("/")[2]
    async with connect(url, origin=f"http://{host}", compression=None) as ws:
        w = await request(ws, {"type": "hello", "token": token, "ref": 1})
        assert w["type"] == "welcome", w
    print("all scenarios passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
