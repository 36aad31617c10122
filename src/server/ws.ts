import type { IncomingMessage } from 'node:http';
import { CloseCode, type ConnectionInitMessage, handleProtocols, makeServer, type ServerOptions } from 'graphql-ws';
import type { WebSocket, WebSocketServer } from 'ws';
import { sharedJsonOf } from './live-execution.js';

/** graphql-ws keep-alive: a ping this often; no pong within the same time terminates the socket. */
export const WS_KEEP_ALIVE_MS = 12_000;

/** What every graphql-ws operation of a socket can reach as `ctx.extra`. */
export interface SocketExtra {
  readonly socket: WebSocket;
  readonly request: IncomingMessage;
}

interface FrameExtra extends SocketExtra {
  /** Per subscription id: the shared JSON of the next result, spliced into the frame at send time. */
  readonly sharedFrames: Map<string, string>;
}

/** What `onNext` hands graphql-ws for a shared result; the real payload is spliced in by `send`. */
const SPLICE_PAYLOAD = Object.freeze({});
const SPLICE_SUFFIX = ',"type":"next","payload":{}}';

/**
 * Serves graphql-ws on a `ws` server, like graphql-ws's own `useServer`, with one difference: a
 * result executed once for a whole group (see live-execution.ts) is not serialised again per
 * subscriber. Its JSON is spliced into each frame, so members' frames differ only by `id`.
 */
export function serveGraphqlWs<P extends ConnectionInitMessage['payload'], E extends Record<PropertyKey, unknown>>(
  options: ServerOptions<P, SocketExtra & Partial<E>>,
  wss: WebSocketServer,
  onInternalError: (err: unknown) => void,
  keepAliveMs: number = WS_KEEP_ALIVE_MS,
): void {
  const userOnNext = options.onNext;
  const server = makeServer<P, SocketExtra & Partial<E>>({
    ...options,
    onNext: async (ctx, id, payload, args, result) => {
      const replaced = await userOnNext?.(ctx, id, payload, args, result);
      if (replaced) return replaced;
      const json = sharedJsonOf(result);
      if (json === undefined) return undefined;
      (ctx.extra as unknown as FrameExtra).sharedFrames.set(id, json);
      return SPLICE_PAYLOAD;
    },
  });
  wss.options.handleProtocols = handleProtocols;

  wss.on('connection', (socket, request) => {
    const sharedFrames = new Map<string, string>();
    const fail = (err: unknown) => {
      onInternalError(err);
      socket.close(CloseCode.InternalServerError, 'Internal server error');
    };
    socket.once('error', fail);

    let pongWait: NodeJS.Timeout | null = null;
    const ping = setInterval(() => {
      if (socket.readyState !== socket.OPEN) return;
      pongWait = setTimeout(() => socket.terminate(), keepAliveMs);
      socket.once('pong', () => {
        if (pongWait) clearTimeout(pongWait);
        pongWait = null;
      });
      socket.ping();
    }, keepAliveMs);

    const closed = server.opened(
      {
        protocol: socket.protocol,
        send: (data) =>
          new Promise<void>((resolve, reject) => {
            if (socket.readyState !== socket.OPEN) return resolve();
            corkUntilTicksEnd(socket);
            socket.send(splice(data, sharedFrames), (err) => (err ? reject(err) : resolve()));
          }),
        close: (code, reason) => socket.close(code, reason),
        onMessage: (cb) =>
          socket.on('message', async (message) => {
            try {
              await cb(String(message));
            } catch (err) {
              fail(err);
            }
          }),
      },
      { socket, request, sharedFrames } satisfies FrameExtra as unknown as SocketExtra & Partial<E>,
    );

    socket.once('close', (code, reason) => {
      if (pongWait) clearTimeout(pongWait);
      clearInterval(ping);
      sharedFrames.clear();
      void closed(code, String(reason));
    });
  });
}

/** The TCP socket under a `ws` WebSocket (`ws` keeps it in `_socket`; it has no public accessor). */
type WithTcpSocket = { _socket?: { cork(): void; uncork(): void } };
const corked = new WeakSet<WebSocket>();

/**
 * Holds a socket's frames until the current batch of ticks and microtasks has run, then writes
 * them in one system call: a fan-out sends a socket many frames in a row, and one write per
 * frame was the largest cost of a delivery.
 */
function corkUntilTicksEnd(socket: WebSocket): void {
  const tcp = (socket as unknown as WithTcpSocket)._socket;
  if (!tcp || corked.has(socket)) return;
  corked.add(socket);
  tcp.cork();
  process.nextTick(() => {
    corked.delete(socket);
    tcp.uncork();
  });
}

/** Puts a shared result's JSON into its `next` frame; any other frame passes unchanged. */
function splice(data: string, sharedFrames: Map<string, string>): string {
  if (sharedFrames.size === 0 || !data.endsWith(SPLICE_SUFFIX)) return data;
  const { id } = JSON.parse(data) as { id: string };
  const json = sharedFrames.get(id);
  if (json === undefined) return data;
  sharedFrames.delete(id);
  // `…,"payload":{}}` becomes `…,"payload":<json>}`.
  return `${data.slice(0, -'{}}'.length)}${json}}`;
}
