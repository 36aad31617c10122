import type { IncomingMessage } from 'node:http';
import type { Identity } from '../../auth/identity.js';
import { NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../../domain/channel-signing.js';
import { AuthenticationError, NotFoundError, QuestionClosedError, ValidationError } from '../../domain/errors.js';
import { MAX_MESSAGE_BYTES } from '../../domain/messages.js';
import { DomainError } from '../../kernel/errors.js';
import type { ContextFactory } from '../context.js';
import { type Route, sendJson } from './route.js';

/** `POST /hooks/channels/<channel id>`: a person's message or answer for a channel's thread (see docs/security.md). */
export const CHANNEL_HOOK_PREFIX = '/hooks/channels/';
/** The largest inbound body: a largest message with room for the other fields and JSON escaping. */
export const CHANNEL_HOOK_MAX_BYTES = 2 * MAX_MESSAGE_BYTES + 4096;

/** Who posts through a hook: the channel itself, proven by its signature rather than a token. */
function channelIdentity(channelId: string): Identity {
  return {
    subject: `channel:${channelId}`,
    tokenId: `channel:${channelId}`,
    source: 'API',
    platformAdmin: false,
    tenantRoles: new Map(),
    workerId: null,
    scopes: new Set(),
    expiresAt: null,
  };
}

export function channelHookRoute(contexts: ContextFactory): Route {
  return async (req, res, requestId) => {
    if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' }, { allow: 'POST' });
    const channelId = decodeURIComponent((req.url ?? '').split('?')[0].slice(CHANNEL_HOOK_PREFIX.length));
    const body = await readBody(req, CHANNEL_HOOK_MAX_BYTES);
    if (body === null) return sendJson(res, 413, { error: 'body too large' }, { connection: 'close' });
    try {
      const ctx = contexts.create(channelIdentity(channelId.slice(0, 100)), requestId);
      const { message, question } = await ctx.services.channelInbound.receive(channelId, {
        timestamp: header(req, TIMESTAMP_HEADER),
        nonce: header(req, NONCE_HEADER),
        signature: header(req, SIGNATURE_HEADER),
        body,
      });
      const posted = { messageId: message.id, threadId: message.threadId, sandboxId: message.sandbox.id };
      sendJson(res, 201, question ? { ...posted, questionId: question.id, status: question.status } : posted);
    } catch (err) {
      if (err instanceof AuthenticationError) return sendJson(res, 401, { error: 'unauthorized', reason: err.message });
      if (err instanceof NotFoundError) return sendJson(res, 404, { error: 'not found', reason: err.message });
      if (err instanceof QuestionClosedError)
        return sendJson(res, 409, { error: 'conflict', code: err.code, reason: err.message, status: err.status });
      if (err instanceof ValidationError)
        // The services name GraphQL input paths (`input.choice`); the hook's body has the bare field.
        return sendJson(res, 400, {
          error: 'bad request',
          reason: err.message,
          field: err.field?.replace(/^input\./, ''),
        });
      if (err instanceof DomainError) return sendJson(res, 503, { error: err.code, reason: err.message });
      const code = (err as { extensions?: { code?: unknown } }).extensions?.code;
      if (code === 'RATE_LIMITED') return sendJson(res, 429, { error: 'rate limited', reason: (err as Error).message });
      throw err;
    }
  };
}

function header(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name];
  return (Array.isArray(value) ? value[0] : value) ?? null;
}

/** The body as UTF-8, or null once it passes `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
