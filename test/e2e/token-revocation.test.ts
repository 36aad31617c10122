import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readServerSentEvents } from '../../src/client/sse.js';
import { DRIVERS } from '../helpers/databases.js';
import { dataOf, registerWorker, uniqueName } from '../helpers/fleet.js';
import { startTestServer, subscribersReach, type TestServer } from '../helpers/server.js';

/**
 * Every way a token is revoked ends its live streams, through the event log (so on every
 * replica, and for SSE streams that have no socket to close), not only revokeToken.
 */
const ASSIGNMENTS = 'subscription($w: ID!) { workerAssignments(workerId: $w) { cursor type } }';
const END_TIMEOUT_MS = 15_000;

/** Opens an SSE subscription; resolves with how it ended (the last error code, or 'complete'). */
async function sseStream(server: TestServer, token: string, workerId: string) {
  const controller = new AbortController();
  const res = await fetch(server.app.graphqlUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: ASSIGNMENTS, variables: { w: workerId } }),
    signal: controller.signal,
  });
  expect(res.status).toBe(200);
  const ended = (async () => {
    let last = 'open';
    for await (const { event, data } of readServerSentEvents(res.body as unknown as AsyncIterable<Uint8Array>)) {
      if (event === 'next' && data) {
        const body = JSON.parse(data) as { errors?: { extensions?: { code?: string } }[] };
        if (body.errors?.length) last = body.errors[0].extensions?.code ?? 'error';
      }
      if (event === 'complete') return last === 'open' ? 'complete' : last;
    }
    return last;
  })();
  return { ended, abort: () => controller.abort() };
}

const within = <T>(promise: Promise<T>) =>
  Promise.race([promise, new Promise<'still open'>((r) => setTimeout(() => r('still open'), END_TIMEOUT_MS))]);

describe.each(DRIVERS)('token revocation ends live streams on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind);
  });
  afterAll(async () => {
    await server?.close();
  });

  for (const mutation of ['rotateWorkerToken', 'deleteWorker'] as const) {
    it(`${mutation} ends the old worker token's streams and logs TOKEN_REVOKED`, async () => {
      const worker = await registerWorker(server, uniqueName('w'));
      const stream = await sseStream(server, worker.token, worker.id);
      await subscribersReach(server, 1);
      const res = await server.gql<Record<string, { __typename: string }>>(
        `mutation($i: WorkerRefInput!) { ${mutation}(input: $i) { __typename } }`,
        { i: { workerId: worker.id } },
      );
      expect(dataOf(res)[mutation].__typename).not.toMatch(/Error$/);
      expect(await within(stream.ended)).toBe('SUBSCRIPTION_ENDED');
      stream.abort();
      // The old token is refused from now on.
      const again = await server.gql('{ __typename }', {}, worker.token);
      expect(again.status).toBe(401);
    });
  }
});
