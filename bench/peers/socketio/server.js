#!/usr/bin/env node
// A Socket.IO 4 server with the Redis adapter (@socket.io/redis-adapter 8, node-redis 4),
// the peer of a roomcast cluster node in the cluster fan-out benchmark
// (bench/socketio-cluster.sh). Several of these processes share one Redis; a room's
// broadcast from any of them reaches the room's members on all of them. The adapter is
// set up the way its README shows ("With the `redis` package").
//
//   PORT=3001 REDIS_URL=redis://127.0.0.1:6379 node server.js
//
// PORT 0 (the default) lets the kernel pick a free port; the `listening on
// 127.0.0.1:PORT` line on stderr says which, once the adapter's Redis connections are up.
//
// Events (each with an acknowledgement callback):
//   join    ROOM              the socket joins ROOM; acked once joined
//   publish {room, data}      io.to(room).emit('message', data), then acked: the ack
//                             means that this process sent it to its own members and
//                             handed it to Redis for the others, not that it was delivered
//
// Only the WebSocket transport is offered (`transports: ['websocket']`, and the clients
// ask for it too): without it every client would start with HTTP long-polling and
// upgrade, and the comparison is with a WebSocket server, so Socket.IO gets to use the
// same transport. Per-message deflate stays off (Socket.IO's default, and roomcast's).
'use strict';
const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

const port = Number(process.env.PORT || 0);
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

async function main() {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  for (const c of [pubClient, subClient]) {
    c.on('error', (e) => console.error(`socket.io server: redis: ${e.message}`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(pubClient, subClient),
    transports: ['websocket'],
    perMessageDeflate: false,
    serveClient: false,
  });

  io.on('connection', (socket) => {
    socket.on('join', (room, ack) => {
      socket.join(String(room));
      if (typeof ack === 'function') ack({ ok: true });
    });
    socket.on('publish', (msg, ack) => {
      io.to(String(msg.room)).emit('message', msg.data);
      if (typeof ack === 'function') ack({ ok: true });
    });
  });

  httpServer.listen(port, '127.0.0.1', () => {
    console.error(`socket.io server: listening on 127.0.0.1:${httpServer.address().port}`);
  });
  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error(`socket.io server: ${e.stack || e}`);
  process.exit(1);
});
