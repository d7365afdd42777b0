// Relay/broadcast server on Node `ws`, after the README's "Server broadcast"
// example ("A client WebSocket broadcasting to all connected WebSocket clients,
// including itself"): on every message, iterate wss.clients and send to each
// OPEN client, keeping the message type.
//
// Relay semantics (wsedge's `relay`): every connection joins the room named by
// the URL path of its upgrade request (`/` is a room too; the query string is
// not part of it), and the README loop is filtered to the sender's room. The
// sender is included. permessage-deflate is off (the ws server default).
//
// Usage: node broadcast.js --listen 127.0.0.1:9300

import WebSocket, { WebSocketServer } from 'ws';
import { announce, parseArgs } from './cli.js';

const NAME = 'ws-broadcast';
const args = parseArgs('broadcast.js');

const wss = new WebSocketServer({ host: args.host, port: args.port });

wss.on('listening', () => announce(NAME, wss));

wss.on('error', (err) => {
  console.error(`${NAME}: ${err.message}`);
  process.exit(1);
});

function roomOf(url) {
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

wss.on('connection', function connection(ws, req) {
  ws.room = roomOf(req.url || '/');
  ws.on('error', args.verbose ? console.error : () => {});

  ws.on('message', function message(data, isBinary) {
    const room = ws.room;
    wss.clients.forEach(function each(client) {
      if (client.room === room && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});
