import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateSandboxDocument,
  CreateTenantDocument,
  createClient,
  RegisterWorkerDocument,
  TenantDocument,
  unwrapPayload,
} from './client/index.js';
import { loadConfig } from './config/index.js';
import { packagePath } from './kernel/paths.js';
import { type Flotilla, startFlotilla } from './server/app.js';

const DEMO_AGENT = packagePath('examples', 'demo-agent.mjs');
const BIN = packagePath('bin', 'flotilla.js');
const DEMO_SANDBOXES = ['researcher', 'coder', 'reviewer', 'planner'];

export interface Demo {
  app: Flotilla;
  adminToken: string;
  tenantId: string;
  workers: ChildProcess[];
  stop(): Promise<void>;
}

/**
 * `flotilla demo`: a server on SQLite with a demo tenant, two real worker agents (child
 * processes) and a handful of sandboxes running a small agent script, so GraphiQL and the
 * dashboard show live activity at once.
 */
export async function startDemo(
  env: NodeJS.ProcessEnv = process.env,
  log: (line: string) => void = console.log,
): Promise<Demo> {
  const dataDir = env.FLOTILLA_DATA_DIR ?? mkdtempSync(join(tmpdir(), 'flotilla-demo-'));
  const config = loadConfig({
    FLOTILLA_DATABASE_URL: `sqlite:${join(dataDir, 'demo.db')}`,
    FLOTILLA_LOG_LEVEL: 'warn',
    ...env,
    FLOTILLA_DATA_DIR: dataDir,
  });
  const app = await startFlotilla(config);
  await app.ready;
  const adminToken = app.adminToken?.token ?? (await app.mintAdminToken());
  const api = createClient({ url: app.graphqlUrl, token: adminToken });

  const existing = await api.query(TenantDocument, { slug: 'demo' });
  let tenantId = existing.ok ? existing.data.tenant?.id : undefined;
  if (!tenantId) {
    const created = await api.mutate(CreateTenantDocument, {
      input: { slug: 'demo', name: 'Demo fleet', quota: { maxSandboxes: 8, maxCpuMillis: 4000, maxMemoryMb: 4096 } },
    });
    if (!created.ok) throw new Error(created.error.message);
    const payload = unwrapPayload(created.data.createTenant);
    if (!payload.ok) throw new Error(payload.error.message);
    tenantId = payload.payload.tenant.id;
  }

  const workers: ChildProcess[] = [];
  for (const n of [1, 2]) {
    const registered = await api.mutate(RegisterWorkerDocument, {
      input: {
        name: `demo-worker-${n}-${Date.now().toString(36)}`,
        region: 'local',
        labels: { runtime: 'process' },
        capacity: { cpuMillis: 2000, memoryMb: 2048 },
        // 50 ports each, so a sandbox asking for ports gets links on the dashboard.
        ports: { from: 8050 + n * 50, to: 8099 + n * 50, publicBaseUrl: 'http://127.0.0.1' },
      },
    });
    if (!registered.ok) throw new Error(registered.error.message);
    const result = registered.data.registerWorker;
    if (result.__typename !== 'RegisterWorkerPayload') throw new Error(`registerWorker: ${result.__typename}`);
    const child = spawn(
      process.execPath,
      [BIN, 'worker', '--url', app.graphqlUrl, '--state-dir', join(dataDir, `worker-${n}`)],
      {
        env: { ...process.env, FLOTILLA_WORKER_TOKEN: result.token, DEMO_THINK_MS: env.DEMO_THINK_MS ?? '2000' },
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    workers.push(child);
  }

  for (const name of DEMO_SANDBOXES) {
    const created = await api.mutate(CreateSandboxDocument, {
      input: {
        tenantId,
        name: `${name}-${Date.now().toString(36)}`,
        image: 'demo/agent:latest',
        command: [process.execPath, DEMO_AGENT],
        resources: { cpuMillis: 250, memoryMb: 256 },
        // One JSON line per message, so a multi-line message is one message (docs/worker.md).
        stdinFraming: 'JSON_LINES',
      },
    });
    if (!created.ok) throw new Error(created.error.message);
  }
  await api.close();

  log(
    [
      '',
      'Flotilla demo is running.',
      `  Dashboard: ${app.url}/`,
      `  GraphiQL:  ${app.graphqlUrl}`,
      `  Token:     ${adminToken}`,
      `  Data:      ${dataDir}`,
      '',
      'Paste the token into the dashboard (or GraphiQL headers as {"Authorization": "Bearer <token>"}).',
      'Press Ctrl+C to stop.',
    ].join('\n'),
  );

  return {
    app,
    adminToken,
    tenantId,
    workers,
    async stop() {
      for (const w of workers) w.kill('SIGTERM');
      await Promise.all(
        workers.map((w) => (w.exitCode !== null ? Promise.resolve() : new Promise((r) => w.once('exit', r)))),
      );
      await app.close();
    },
  };
}
