// Echo server on Node `ws`, after the README's "Simple server" example
// (new WebSocketServer, ws.on('error'), ws.on('message')), sending every text or
// binary message back with its type kept: ws.send(data, { binary: isBinary }).
// ws answers pings and the close handshake itself; permessage-deflate is off
// (the ws server default); sockets get TCP_NODELAY (ws sets it on every socket).
//
// Usage: node echo.js --listen 127.0.0.1:9300

import { WebSocketServer } from 'ws';
import { announce, parseArgs } from './cli.js';

const NAME = 'ws-echo';
const args = parseArgs('echo.js');

const wss = new WebSocketServer({ host: args.host, port: args.port });

wss.on('listening', () => announce(NAME, wss));

wss.on('error', (err) => {
  console.error(`${NAME}: ${err.message}`);
  process.exit(1);
});

wss.on('connection', function connection(ws) {
  ws.on('error', args.verbose ? console.error : () => {});

  ws.on('message', function message(data, isBinary) {
    ws.send(data, { binary: isBinary });
  });
});
