/**
 * A latency probe in its own process: sends one small authenticated query at a time to the
 * server for as long as it runs and prints `<epoch ms at start> <latency ms>` per answer, so the
 * benchmark can read what an unrelated request experiences while a fan-out is in flight.
 *
 *   tsx bench/probe.ts <graphql url> <token> <tenant id>
 *
 * Lines `pause` / `resume` on stdin stop and restart it (rounds that measure server CPU run without it).
 */
import { createInterface } from 'node:readline';

const [url, token, tenantId] = process.argv.slice(2);
const QUERY = 'query($id: ID!) { tenant(id: $id) { slug name } }';
/** A pause between queries, so the probe measures latency without loading the server itself. */
const GAP_MS = 5;

let paused = false;
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'pause') paused = true;
  if (line === 'resume') paused = false;
});

for (;;) {
  if (paused) {
    await new Promise((r) => setTimeout(r, GAP_MS));
    continue;
  }
  const startedAt = Date.now();
  const t0 = performance.now();
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: QUERY, variables: { id: tenantId } }),
    });
    const body = (await res.json()) as { data?: { tenant?: { slug: string } } };
    if (!body.data?.tenant) throw new Error(JSON.stringify(body));
    process.stdout.write(`${startedAt} ${(performance.now() - t0).toFixed(2)}\n`);
  } catch (err) {
    process.stderr.write(`probe: ${String(err)}\n`);
  }
  await new Promise((r) => setTimeout(r, GAP_MS));
}
