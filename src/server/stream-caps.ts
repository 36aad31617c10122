import type { ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Identity } from '../auth/identity.js';
import { LimitExceededError } from '../kernel/errors.js';
import { toGraphQLError } from './errors.js';

/** WebSocket close code for a socket refused because its token holds too many already. */
export const CLOSE_TOO_MANY_SOCKETS = 4429;

export interface StreamCapSettings {
  /** Operations (live subscriptions included) open at once on one graphql-ws socket. */
  maxSubscriptionsPerSocket: number;
  /** graphql-ws sockets open at once per token, in this process. */
  maxSocketsPerToken: number;
  /** Subscription streams over HTTP (SSE) open at once per token, in this process. */
  maxSseStreamsPerToken: number;
}

/**
 * Caps on what one caller may hold open: sockets and SSE streams per token, operations per
 * socket. Each slot is taken when the thing opens and given back on every way it can end
 * (completion, error, the client going away, the server ending it on revocation or expiry);
 * counts are per process, like the sockets themselves.
 */
export class StreamCaps {
  private readonly sockets = new Map<string, number>();
  private readonly sseStreams = new Map<string, number>();

  constructor(readonly settings: StreamCapSettings) {}

  /** Takes a socket slot for the token; returns its release, or null when the token holds the maximum. */
  admitSocket(identity: Identity): (() => void) | null {
    return take(this.sockets, identity.tokenId, this.settings.maxSocketsPerToken);
  }

  socketRefusal(): string {
    return `too many sockets for this token (at most ${this.settings.maxSocketsPerToken})`;
  }

  /**
   * Refuses a new operation on a socket that has `open` operations already (graphql-ws keeps
   * one entry per operation from its subscribe message to its end, this one included).
   */
  checkSocketOperations(open: number): LimitExceededError | null {
    const max = this.settings.maxSubscriptionsPerSocket;
    if (open <= max) return null;
    return new LimitExceededError(
      'maxSubscriptionsPerSocket',
      max,
      `too many subscriptions on this socket (at most ${max}); complete one first`,
    );
  }

  /** Open slots, for tests and metrics: sockets and SSE streams per token. */
  held(tokenId: string): { sockets: number; sseStreams: number } {
    return { sockets: this.sockets.get(tokenId) ?? 0, sseStreams: this.sseStreams.get(tokenId) ?? 0 };
  }

  /** Counts subscription streams over HTTP (SSE) per token and refuses those past the cap. */
  ssePlugin(): Plugin {
    const caps = this;
    return {
      onSubscribe({ args, setResultAndStopExecution }) {
        const context = args.contextValue as { identity?: Identity; viaSocket?: boolean };
        if (context.viaSocket || !context.identity) return undefined;
        const max = caps.settings.maxSseStreamsPerToken;
        const release = take(caps.sseStreams, context.identity.tokenId, max);
        if (!release) {
          const refused = new LimitExceededError(
            'maxSseStreamsPerToken',
            max,
            `too many event streams for this token (at most ${max}); close one first`,
          );
          setResultAndStopExecution({ errors: [toGraphQLError(refused)] });
          return undefined;
        }
        return {
          onSubscribeResult({ result, setResult }) {
            if (isAsyncIterator(result)) setResult(releasedAtEnd(result, release));
            else release();
          },
          onSubscribeError() {
            release();
          },
        };
      },
    };
  }
}

/** Takes one of `max` slots of `key`; the release is idempotent. */
function take(counts: Map<string, number>, key: string, max: number): (() => void) | null {
  const held = counts.get(key) ?? 0;
  if (held >= max) return null;
  counts.set(key, held + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const left = (counts.get(key) ?? 1) - 1;
    if (left > 0) counts.set(key, left);
    else counts.delete(key);
  };
}

function isAsyncIterator<T>(value: T | AsyncIterableIterator<T>): value is AsyncIterableIterator<T> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}

/** Passes a stream through and calls `release` once it ends, however it ends. */
function releasedAtEnd(
  source: AsyncIterableIterator<ExecutionResult>,
  release: () => void,
): AsyncIterableIterator<ExecutionResult> {
  const wrapped: AsyncIterableIterator<ExecutionResult> = {
    [Symbol.asyncIterator]: () => wrapped,
    async next() {
      try {
        const step = await source.next();
        if (step.done) release();
        return step;
      } catch (err) {
        release();
        throw err;
      }
    },
    async return() {
      release();
      return (await source.return?.()) ?? { done: true, value: undefined };
    },
    async throw(err?: unknown) {
      release();
      if (source.throw) return source.throw(err);
      throw err;
    },
  };
  return wrapped;
}
