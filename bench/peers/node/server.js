#!/usr/bin/env node
// A Node `ws` peer server for roomcast's benchmarks, written as the ws README does.
//
//   node server.js echo PORT        every text or binary message comes back
//   node server.js broadcast PORT   every message goes to every client, the sender too
//   node server.js broadcast-deflate PORT
//                                   the same with permessage-deflate as ws offers it
//                                   (context takeover, messages of 128 B or more
//                                   compressed: the threshold roomcast uses)
//
// PORT 0 lets the kernel pick a free port; the `listening on 127.0.0.1:PORT` line on
// stderr says which.
'use strict';
const WebSocket = require('ws');

const [mode, port] = process.argv.slice(2);
if (!['echo', 'broadcast', 'broadcast-deflate'].includes(mode) || port === undefined) {
  console.error('usage: node server.js echo|broadcast|broadcast-deflate PORT');
  process.exit(2);
}
const perMessageDeflate = mode === 'broadcast-deflate' ? { threshold: 128 } : false;
const wss = new WebSocket.Server({ host: '127.0.0.1', port: Number(port), perMessageDeflate, maxPayload: 64 * 1024 * 1024 });
wss.on('listening', () => console.error(`ws ${mode}: listening on 127.0.0.1:${wss.address().port}`));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (mode === 'echo') {
      ws.send(data, { binary: isBinary });
    } else {
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
      }
    }
  });
});
