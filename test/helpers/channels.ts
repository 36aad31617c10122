import { createHmac, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { localId, type TestServer } from './server.js';

/** One request the receiver got, and how it was answered. */
export interface Received {
  headers: IncomingMessage['headers'];
  body: string;
  payload: { id: string; channel: string; threadId: string; sandboxId: string; kind: string; body: string } & Record<
    string,
    unknown
  >;
  answered: number | null;
}

/**
 * A real HTTP receiver on 127.0.0.1: records every request and answers it as `answer` says
 * (a status, or 'hang' to hold the request open until `release`).
 */
export class Receiver {
  readonly requests: Received[] = [];
  answer: (r: Received) => number | 'hang' = () => 200;
  private readonly hanging: ServerResponse[] = [];
  private server!: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const received: Received = { headers: req.headers, body, payload: JSON.parse(body), answered: null };
        this.requests.push(received);
        const status = this.answer(received);
        if (status === 'hang') {
          this.hanging.push(res);
          return;
        }
        received.answered = status;
        res.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  get hangingCount(): number {
    return this.hanging.filter((res) => !res.writableEnded && !res.destroyed).length;
  }

  release(): void {
    for (const res of this.hanging.splice(0)) if (!res.destroyed) res.writeHead(200).end();
  }

  bodies(where: (r: Received) => boolean = () => true): string[] {
    return this.requests.filter(where).map((r) => r.payload.body);
  }

  async close(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function sign(secret: string, parts: string[]): string {
  return `v1=${createHmac('sha256', secret).update(parts.join('.')).digest('hex')}`;
}

/** What an inbound call may change: another secret, a signature, timestamp or nonce of its own. */
export interface Tamper {
  timestamp?: string;
  nonce?: string;
  signature?: string;
  secret?: string;
}

/** A signed call to a channel's inbound hook, as a chat bridge would make it; `tamper` changes what is sent. */
export async function signedInbound(
  server: TestServer,
  ch: { id: string; secret: string },
  body: Record<string, unknown> | string,
  tamper: Tamper = {},
) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  const timestamp = tamper.timestamp ?? String(Math.floor(Date.now() / 1000));
  const nonce = tamper.nonce ?? randomUUID();
  const signature = tamper.signature ?? sign(tamper.secret ?? ch.secret, [timestamp, nonce, raw]);
  const res = await fetch(`${server.app.url}/hooks/channels/${localId(ch.id)}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-flotilla-timestamp': timestamp,
      'x-flotilla-nonce': nonce,
      'x-flotilla-signature': signature,
    },
    body: raw,
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown>, send: { timestamp, nonce, raw } };
}
