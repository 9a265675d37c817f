#!/usr/bin/env python3
"""A Python `websockets` peer for roomcast's interop tests.

    peer.py client WS_URL [deflate]   run every scenario against a server that follows
                                      the script
    peer.py server [deflate]          serve the script on a free port; print "PORT n"
                                      first

With `deflate`, permessage-deflate is offered or taken, and a client checks that it was
agreed.

The script (see crates/roomcast-ws/tests/common/mod.rs): messages come back unchanged,
except the commands cmd:close:CODE:REASON, cmd:fragments:N:TEXT and cmd:ping:PAYLOAD.
"""
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

BIG = 16 * 1024 * 1024
DEFLATE = "deflate" in sys.argv[2:]
COMPRESSION = "deflate" if DEFLATE else None


def pattern(n):
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


async def expect(ws, sent, received=None):
    await ws.send(sent)
    got = await asyncio.wait_for(ws.recv(), 30)
    want = sent if received is None else received
    assert got == want, f"sent {str(sent)[:60]!r}, got {str(got)[:60]!r}"


async def client(url):
    async with connect(url, max_size=None, ping_interval=None, compression=COMPRESSION) as ws:
        if DEFLATE:
            names = [e.name for e in ws.protocol.extensions]
            assert names == ["permessage-deflate"], f"not agreed: {names}"
        await expect(ws, "hello")
        await expect(ws, "κόσμε €𝄞")
        await expect(ws, bytes(range(256)))
        await expect(ws, "")
        await expect(ws, b"")
        await expect(ws, pattern(BIG))
        await expect(ws, "a€" * (BIG // 4))
        # an iterable is sent as one fragmented message
        await expect(ws, ["frag", "men", "ted κόσμε"], "fragmented κόσμε")
        await expect(ws, "cmd:fragments:5:sent in fragments: κόσμε", "sent in fragments: κόσμε")
        pong = await ws.ping(b"python-ping")
        await asyncio.wait_for(pong, 10)
        await expect(ws, "cmd:ping:from-server", "pong:from-server")
        await ws.close(code=4000, reason="bye")
        rcvd = ws.protocol.close_rcvd
        assert rcvd is not None and rcvd.code == 4000, rcvd
    async with connect(url, compression=COMPRESSION) as ws:
        await ws.send("cmd:close:4001:server says bye")
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("the server did not close")
        except ConnectionClosed as e:
            assert e.rcvd is not None, "no close frame received"
            assert (e.rcvd.code, e.rcvd.reason) == (4001, "server says bye"), e.rcvd
    print("python client" + (" (permessage-deflate)" if DEFLATE else "") + ": all scenarios passed", flush=True)


async def handler(ws):
    try:
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("cmd:"):
                _, cmd, rest = msg.split(":", 2)
                if cmd == "close":
                    code, reason = rest.split(":", 1)
                    await ws.close(int(code), reason)
                    return
                if cmd == "fragments":
                    n, text = rest.split(":", 1)
                    n = int(n)
                    step = max(1, -(-len(text) // n))
                    await ws.send([text[i * step:(i + 1) * step] for i in range(n)])
                elif cmd == "ping":
                    pong = await ws.ping(rest.encode())
                    await pong
                    await ws.send("pong:" + rest)
            else:
                await ws.send(msg)
    except ConnectionClosed:
        pass


async def server():
    async with serve(handler, "127.0.0.1", 0, max_size=None, ping_interval=None, compression=COMPRESSION) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await srv.serve_forever()


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "server":
        asyncio.run(server())
    elif len(sys.argv) >= 3 and sys.argv[1] == "client":
        asyncio.run(client(sys.argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
