#!/usr/bin/env python3
"""A Python `websockets` client of roomcast's /ws protocol, for the hub's tests.

    hub_client.py WS_URL [deflate]     e.g. ws://127.0.0.1:8080/ws

With `deflate`, every connection offers permessage-deflate, checks that it was agreed,
and the messages are chat-like JSON long enough to be sent compressed.

Runs the scenarios of docs/protocol.md as a third-party client would: hello, join with
presence, publish with an idempotency key, presence, history, recovery with `since`
after a disconnect, and errors. Prints "all scenarios passed" on success.
"""
import asyncio
import json
import sys

from websockets.asyncio.client import connect

DEFLATE = "deflate" in sys.argv[2:]


def chat(i):
    """A message body: long, repetitive JSON with compression on, a number without."""
    if not DEFLATE:
        return i
    return {"i": i, "text": f"message {i} about the weather and the match, " * 20}


class Client:
    def __init__(self, ws):
        self.ws = ws
        self.ref = 0
        self.backlog = []

    @classmethod
    async def open(cls, url, name):
        c = cls(await connect(url, compression="deflate" if DEFLATE else None))
        names = [e.name for e in c.ws.protocol.extensions]
        assert names == (["permessage-deflate"] if DEFLATE else []), names
        welcome = await c.request({"type": "hello", "client": name})
        assert welcome["type"] == "welcome" and welcome["client"] == name, welcome
        assert welcome["heartbeat_ms"] > 0
        return c

    async def recv(self):
        return json.loads(await asyncio.wait_for(self.ws.recv(), 10))

    async def request(self, req):
        self.ref += 1
        req["ref"] = self.ref
        await self.ws.send(json.dumps(req))
        while True:
            m = await self.recv()
            if m.get("ref") == self.ref:
                return m
            self.backlog.append(m)

    async def next(self, kind):
        for i, m in enumerate(self.backlog):
            if m["type"] == kind:
                return self.backlog.pop(i)
        while True:
            m = await self.recv()
            if m["type"] == kind:
                return m
            self.backlog.append(m)


async def main(url):
    alice = await Client.open(url, "alice")
    bob = await Client.open(url, "bob")
    joined = await alice.request({"type": "join", "room": "py", "presence": {"lang": "python"}})
    assert joined["type"] == "joined" and joined["offset"] == 0 and "recovered" not in joined, joined
    epoch = joined["epoch"]
    await bob.request({"type": "join", "room": "py", "presence": {}})

    ack = await alice.request({"type": "publish", "room": "py", "data": {"text": "héllo"}, "id": "py-1"})
    assert ack["type"] == "ack" and ack["offset"] == 1, ack
    retry = await alice.request({"type": "publish", "room": "py", "data": {"text": "héllo"}, "id": "py-1"})
    assert (retry["type"], retry["offset"]) == ("ack", 1), retry
    # A later message: each member sees the first copy, then it; no second copy between.
    after = await alice.request({"type": "publish", "room": "py", "data": "after", "id": "py-2"})
    assert (after["type"], after["offset"]) == ("ack", 2), after
    for c in (alice, bob):
        m = await c.next("message")
        assert (m["offset"], m["from"], m["data"], m["epoch"]) == (1, "alice", {"text": "héllo"}, epoch), m
        m = await c.next("message")
        assert (m["offset"], m["data"]) == (2, "after"), m

    members = await bob.request({"type": "presence", "room": "py"})
    assert sorted(m["client"] for m in members["members"]) == ["alice", "bob"], members

    # bob drops; 50 messages go by; bob comes back with `since` and gets exactly those.
    last = 2
    await bob.ws.close()
    for i in range(50):
        last = (await alice.request({"type": "publish", "room": "py", "data": chat(i)}))["offset"]
    bob = await Client.open(url, "bob")
    back = await bob.request({"type": "join", "room": "py", "since": {"epoch": epoch, "offset": 2}})
    assert back["recovered"] is True and back["offset"] == last, back
    got = [(await bob.next("message"))["data"] for _ in range(50)]
    assert got == [chat(i) for i in range(50)], got

    history = await bob.request({"type": "history", "room": "py", "since": {"epoch": epoch, "offset": 49}, "limit": 2})
    assert [m["offset"] for m in history["messages"]] == [50, 51], history

    err = await bob.request({"type": "publish", "room": "elsewhere", "data": 1})
    assert (err["type"], err["code"]) == ("error", "not_joined"), err
    err = await bob.request({"type": "whatever"})
    assert err["code"] == "unknown_type", err
    pong = await bob.request({"type": "ping"})
    assert pong["type"] == "pong"
    # Without a ref, replies carry none (success and error alike).
    await bob.ws.send(json.dumps({"type": "ping"}))
    pong = await bob.recv()
    assert pong["type"] == "pong" and "ref" not in pong, pong
    await bob.ws.send(json.dumps({"type": "leave", "room": "elsewhere"}))
    err = await bob.recv()
    assert err.get("code") == "not_joined" and "ref" not in err, err
    await alice.ws.close()
    await bob.ws.close()
    print("python hub client" + (" (permessage-deflate)" if DEFLATE else "") + ": all scenarios passed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1]))
