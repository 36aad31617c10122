import type { IncomingMessage, ServerResponse } from 'node:http';

/** Answers one path of the HTTP server; `requestId` is the request's `x-request-id`. */
export type Route = (req: IncomingMessage, res: ServerResponse, requestId: string) => Promise<void> | void;

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(JSON.stringify(body));
}
