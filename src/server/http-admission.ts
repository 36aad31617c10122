import type { IncomingMessage } from 'node:http';
import { crossSiteRejection } from './csrf.js';
import type { Limits } from './limits.js';

export interface HttpRejection {
  status: number;
  code: string;
  message: string;
}

/** A refused request body up to this size is read and discarded before answering; larger ones are cut off. */
export const REJECTED_BODY_DRAIN_BYTES = 16 * 1024 * 1024;

/** Checks a GraphQL HTTP request before its body is read (its declared size, then CSRF); null when it may proceed. */
export function checkHttpRequest(req: IncomingMessage, limits: Limits): HttpRejection | null {
  const method = (req.method ?? 'GET').toUpperCase();
  if (method === 'POST') {
    const length = req.headers['content-length'];
    if (length === undefined) {
      // Without a length the body could be endless; every ordinary client sends one.
      return { status: 411, code: 'LENGTH_REQUIRED', message: 'a Content-Length header is required' };
    }
    const bytes = Number(length);
    if (!Number.isFinite(bytes) || bytes > limits.maxBodyBytes) {
      return {
        status: 413,
        code: 'PAYLOAD_TOO_LARGE',
        message: `the request body exceeds ${limits.maxBodyBytes} bytes`,
      };
    }
  }
  if (!limits.csrfPrevention) return null;
  return crossSiteRejection(req, method);
}
