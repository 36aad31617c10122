import type { IncomingMessage } from 'node:http';
import type { HttpRejection } from './http-admission.js';

/** Content types a browser sends cross-site without a CORS preflight. */
const SIMPLE_CONTENT_TYPES = new Set(['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain']);
/** Any of these headers forces a preflight, so a request carrying one cannot be a blind cross-site form post. */
export const PREFLIGHT_HEADERS = [
  'authorization',
  'x-flotilla-csrf',
  'graphql-require-preflight',
  'apollo-require-preflight',
];

/**
 * Refuses a request a browser could have sent cross-site without a preflight (a form post, or a
 * GET carrying an operation); null when it may proceed.
 */
export function crossSiteRejection(req: IncomingMessage, method: string): HttpRejection | null {
  const preflighted = PREFLIGHT_HEADERS.some((h) => req.headers[h] !== undefined);
  if (preflighted) return null;
  if (method === 'POST') {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type === '' || SIMPLE_CONTENT_TYPES.has(type)) return csrfRejection();
  } else if (method === 'GET') {
    // A browser navigation gets the GraphiQL page, which executes nothing by itself.
    if ((req.headers.accept ?? '').includes('text/html')) return null;
    const search = new URL(req.url ?? '/', 'http://localhost').searchParams;
    if (search.has('query') || search.has('extensions')) return csrfRejection();
  }
  return null;
}

function csrfRejection(): HttpRejection {
  return {
    status: 403,
    code: 'CSRF_REJECTED',
    message: `this request could have been sent by a cross-site form: use Content-Type: application/json or send one of the headers ${PREFLIGHT_HEADERS.join(', ')}`,
  };
}
