import { once } from 'node:events';
import type { YogaServerInstance } from 'graphql-yoga';
import type { Context } from '../../../resolvers/builder.js';
import { checkHttpRequest, REJECTED_BODY_DRAIN_BYTES } from '../http-admission.js';
import type { Limits } from '../limits.js';
import type { ServerContext } from '../yoga.js';
import { type Route, sendJson } from './route.js';

export const GRAPHQL_PATH = '/graphql';

/** GraphQL over HTTP and SSE (and GraphiQL), after the size and CSRF checks. */
export function graphqlRoute(yoga: YogaServerInstance<ServerContext, Context>, limits: Limits): Route {
  return async (req, res, requestId) => {
    const rejected = checkHttpRequest(req, limits);
    if (rejected) {
      // Read and discard a moderately sized body first, so the client sees the answer
      // instead of a reset mid-upload; anything larger is cut off with the connection.
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > 0 && declared <= REJECTED_BODY_DRAIN_BYTES) {
        req.resume();
        await once(req, 'end');
      }
      return sendJson(
        res,
        rejected.status,
        { errors: [{ message: rejected.message, extensions: { code: rejected.code } }] },
        { connection: 'close' },
      );
    }
    await yoga.handle(req, res, { requestId });
  };
}
