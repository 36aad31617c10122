import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { createClient, MessagesDocument, SandboxesDocument, TenantDocument } from '../../src/client/index.js';
import { BIN, isAlive, killChildren, spawnChild } from '../helpers/processes.js';

const WAIT_MS = 30_000;
const POLL_MS = 250;
/** The demo has four sandboxes (src/demo.ts). */
const DEMO_SANDBOXES = 4;
/** A stopped demo ends its workers and their sandboxes within this. */
const STOP_MS = 15_000;

function childrenOf(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)])
      .toString()
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return []; // pgrep exits 1 when there are none
  }
}

function descendantsOf(pid: number): number[] {
  return childrenOf(pid).flatMap((child) => [child, ...descendantsOf(child)]);
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

describe('flotilla demo', () => {
  afterAll(async () => {
    await killChildren();
  });

  it('starts, prints its URLs and a token, runs sandboxes with agent messages, and stops cleanly', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'flotilla-demo-test-'));
    const demo = spawnChild([BIN, 'demo'], {
      FLOTILLA_PORT: '0',
      FLOTILLA_HOST: '127.0.0.1',
      FLOTILLA_DATA_DIR: dataDir,
      DEMO_THINK_MS: '100',
    });

    const dashboard = (await demo.waitForLine(/Dashboard: /, WAIT_MS)).split('Dashboard: ')[1]?.trim() ?? '';
    const graphql = (await demo.waitForLine(/GraphiQL: /)).split('GraphiQL: ')[1]?.trim() ?? '';
    const token = (await demo.waitForLine(/Token: /)).split('Token: ')[1]?.trim() ?? '';
    expect(dashboard).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(graphql).toBe(`${dashboard}graphql`);
    expect(token.length).toBeGreaterThan(20);

    const client = createClient({ url: graphql, token });
    try {
      const tenant = await client.query(TenantDocument, { slug: 'demo' });
      const tenantId = tenant.ok ? tenant.data.tenant?.id : undefined;
      expect(tenantId).toBeTruthy();

      const sandboxIds = await vi.waitFor(
        async () => {
          const page = await client.query(SandboxesDocument, { tenantId: tenantId as string, first: 20 });
          if (!page.ok) throw new Error(page.error.message);
          const nodes = page.data.sandboxes.edges.map((e) => e.node);
          expect(nodes.filter((s) => s.status === 'RUNNING')).toHaveLength(DEMO_SANDBOXES);
          return nodes.map((s) => s.id);
        },
        { timeout: WAIT_MS, interval: POLL_MS },
      );
      for (const id of sandboxIds) {
        await vi.waitFor(
          async () => {
            const messages = await client.query(MessagesDocument, { sandboxId: id, first: 20 });
            if (!messages.ok) throw new Error(messages.error.message);
            expect(
              messages.data.messages.edges
                .map((e) => e.node)
                .filter((m) => m.senderKind === 'AGENT')
                .map((m) => m.body)
                .join('\n'),
            ).toContain('hello! I am a demo agent');
          },
          { timeout: WAIT_MS, interval: POLL_MS },
        );
      }
    } finally {
      await client.close();
    }

    // Its workers are real child processes; they and their sandboxes end with the demo.
    const pids = descendantsOf(demo.process.pid as number);
    const sandboxPids = pids.filter((pid) => commandLine(pid).includes('demo-agent.mjs'));
    expect(sandboxPids).toHaveLength(DEMO_SANDBOXES);
    expect(pids.filter((pid) => commandLine(pid).includes(' worker --url ')).length).toBe(2);
    demo.process.kill('SIGTERM');
    const exit = await Promise.race([demo.exited, new Promise<null>((r) => setTimeout(() => r(null), STOP_MS))]);
    expect(exit).toEqual({ code: 0, signal: null });
    // Processes end as their parents finish; give the last ones a moment to be gone.
    await vi.waitFor(() => expect(pids.filter(isAlive)).toEqual([]), { timeout: 10_000, interval: 100 });
  });
});
