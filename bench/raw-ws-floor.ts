/**
 * The physical floor of a fan-out: a bare `ws` server (its own process, like Flotilla's) that, on
 * request, sends one graphql-ws-shaped `next` frame per subscription to every open socket, with
 * the payload serialised once. No GraphQL, no database, no authorisation.
 *
 *   stdin line `broadcast <perSocket> <payload-json>` → frames out; stdout `sent <cpuMs>` when
 *   every send callback has fired. Prints `listening <port>` at start.
 */
import { createInterface } from 'node:readline';
import { WebSocketServer } from 'ws';

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
wss.on('listening', () => {
  const address = wss.address();
  if (address && typeof address === 'object') console.log(`listening ${address.port}`);
});

createInterface({ input: process.stdin }).on('line', (line) => {
  const match = /^broadcast (\d+) (.*)$/.exec(line);
  if (!match) return;
  const perSocket = Number(match[1]);
  const payload = match[2];
  const cpu = process.cpuUsage();
  let pending = 0;
  const done = () => {
    pending -= 1;
    if (pending === 0) {
      const used = process.cpuUsage(cpu);
      console.log(`sent ${(used.user + used.system) / 1000}`);
    }
  };
  for (const socket of wss.clients) {
    for (let i = 0; i < perSocket; i++) {
      pending += 1;
      socket.send(`{"id":"${i}","type":"next","payload":${payload}}`, done);
    }
  }
  if (pending === 0) console.log('sent 0');
});
