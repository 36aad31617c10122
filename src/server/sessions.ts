import { type ExecutionResult, GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Identity } from '../auth/identity.js';
import type { Clock } from '../kernel/clock.js';

/** WebSocket close code when the connection's token is refused, expires or is revoked. */
export const CLOSE_FORBIDDEN = 4403;
/** setTimeout fires at once for delays above 2^31-1 ms; longer expiries re-arm in steps. */
const MAX_TIMER_MS = 2_147_483_647;

/** What the registry needs of a socket: a way to close it with a code and reason. */
export interface ClosableSocket {
  close(code: number, reason: string): void;
}

interface Session {
  socket: ClosableSocket;
  identity: Identity;
  timer: NodeJS.Timeout | null;
}

/**
 * The live WebSocket sessions of this process, by token id and by subject, so that a
 * token's expiry closes its sockets (4403) and a revocation can end them at once. Only
 * this process's sockets: on other replicas the revocation's event in the log ends the
 * token's streams, and its sockets are refused at their next operation.
 */
export class SessionRegistry {
  private readonly sessions = new Set<Session>();

  constructor(private readonly clock: Clock) {}

  /** Tracks a socket until it closes; returns the function to call when it does. */
  add(socket: ClosableSocket, identity: Identity): () => void {
    const session: Session = { socket, identity, timer: null };
    this.sessions.add(session);
    this.armExpiry(session);
    return () => this.forget(session);
  }

  /** Closes every socket authenticated with one of these tokens. */
  endTokens(tokenIds: readonly string[], reason = 'token revoked'): number {
    const ids = new Set(tokenIds);
    return this.endWhere((s) => ids.has(s.identity.tokenId), reason);
  }

  /** Closes every socket of a subject (e.g. a removed member). */
  endSubject(subject: string, reason = 'access revoked'): number {
    return this.endWhere((s) => s.identity.subject === subject, reason);
  }

  get size(): number {
    return this.sessions.size;
  }

  /**
   * Ends every subscription stream when its token expires, with an UNAUTHENTICATED error as
   * its last event: covers SSE streams, which have no socket to close. A WebSocket operation
   * needs no timer of its own: its socket's session closes the socket (4403) at expiry.
   */
  expiryPlugin(): Plugin {
    const clock = this.clock;
    return {
      onSubscribe({ args }) {
        const context = args.contextValue as { identity?: Identity; viaSocket?: boolean };
        const expiresAt = context.identity?.expiresAt ?? null;
        if (!expiresAt || context.viaSocket) return undefined;
        return {
          onSubscribeResult({ result, setResult }) {
            if (isAsyncIterator(result)) setResult(endAtExpiry(result, expiresAt, clock));
          },
        };
      },
    };
  }

  private endWhere(match: (s: Session) => boolean, reason: string): number {
    let ended = 0;
    for (const session of [...this.sessions]) {
      if (!match(session)) continue;
      this.forget(session);
      session.socket.close(CLOSE_FORBIDDEN, reason);
      ended += 1;
    }
    return ended;
  }

  private armExpiry(session: Session): void {
    const expiresAt = session.identity.expiresAt;
    if (!expiresAt) return;
    const left = expiresAt.getTime() - this.clock.now().getTime();
    if (left <= 0) {
      this.forget(session);
      session.socket.close(CLOSE_FORBIDDEN, 'token expired');
      return;
    }
    session.timer = setTimeout(() => this.armExpiry(session), Math.min(left, MAX_TIMER_MS));
    session.timer.unref();
  }

  private forget(session: Session): void {
    if (session.timer) clearTimeout(session.timer);
    session.timer = null;
    this.sessions.delete(session);
  }
}

function isAsyncIterator<T>(value: T | AsyncIterableIterator<T>): value is AsyncIterableIterator<T> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}

/** Passes a stream's events through until `expiresAt`, then ends it with an UNAUTHENTICATED error. */
export function endAtExpiry(
  source: AsyncIterableIterator<ExecutionResult>,
  expiresAt: Date,
  clock: Clock,
): AsyncIterableIterator<ExecutionResult> {
  let timer: NodeJS.Timeout | null = null;
  let finished = false;
  let expire: () => void = () => undefined;
  const expired = new Promise<'expired'>((resolve) => {
    expire = () => resolve('expired');
  });
  const arm = () => {
    const left = expiresAt.getTime() - clock.now().getTime();
    if (left <= 0) return expire();
    timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
    timer.unref();
  };
  arm();
  const finish = () => {
    finished = true;
    if (timer) clearTimeout(timer);
    // Not awaited: a source waiting for its next event may only settle on its own schedule.
    void Promise.resolve(source.return?.()).catch(() => undefined);
  };
  const wrapped: AsyncIterableIterator<ExecutionResult> = {
    [Symbol.asyncIterator]: () => wrapped,
    async next() {
      if (finished) return { done: true, value: undefined };
      const winner = await Promise.race([source.next(), expired]);
      if (winner === 'expired') {
        finish();
        return {
          done: false,
          value: { errors: [new GraphQLError('token expired', { extensions: { code: 'UNAUTHENTICATED' } })] },
        };
      }
      if (winner.done) finish();
      return winner;
    },
    async return() {
      finish();
      return { done: true, value: undefined };
    },
  };
  return wrapped;
}
