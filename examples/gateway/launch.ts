/**
 * Starts Flotilla, the example usage subgraph and Hive Gateway as three processes on this
 * machine, composes the supergraph from both subgraphs' SDL, and stops them all again.
 * Used by `npm run gateway` and by the federation end-to-end test.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { USAGE_TYPE_DEFS } from '../usage-subgraph/schema.js';
import { composeSupergraph, FLOTILLA_SUBGRAPH, type SubgraphSource, USAGE_SUBGRAPH } from './compose.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FLOTILLA_BIN = join(ROOT, 'bin/flotilla.js');
const USAGE_SERVER = join(ROOT, 'examples/usage-subgraph/server.ts');
const GATEWAY_BIN = join(ROOT, 'node_modules/@graphql-hive/gateway/dist/bin.js');
const GATEWAY_CONFIG = join(ROOT, 'examples/gateway/gateway.config.ts');
const FLOTILLA_SUBGRAPH_SDL = join(ROOT, 'schema/subgraph.graphql');

/** How long one process may take to come up (tsx compiles on the first start). */
export const START_TIMEOUT_MS = 30_000;
/** How long a process gets to exit after SIGTERM before it is killed. */
export const STOP_GRACE_MS = 5_000;
const READINESS_POLL_MS = 100;

export interface FederationOptions {
  host?: string;
  /** 0 (the default) picks free ports. */
  flotillaPort?: number;
  usagePort?: number;
  gatewayPort?: number;
  /** The environment of the Flotilla process (FLOTILLA_DATABASE_URL etc.); default process.env. */
  flotillaEnv?: NodeJS.ProcessEnv;
  /** Receives every line the processes print, prefixed with their name. */
  onOutput?: (line: string) => void;
}

export interface RunningFederation {
  gatewayUrl: string;
  flotillaUrl: string;
  usageUrl: string;
  /** The platform-admin token Flotilla minted, when this start created its database. */
  adminToken: string | null;
  supergraphFile: string;
  stop(): Promise<void>;
}

/** The processes one start spawned: stopped together, and never left behind. */
class ProcessGroup {
  readonly children: ChildProcess[] = [];
  // Should this process die without stopping them, the children must not outlive it.
  private readonly killLeftovers = () => {
    for (const child of this.children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };

  constructor() {
    process.once('exit', this.killLeftovers);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.children].reverse().map((child) => stopProcess(child)));
    process.off('exit', this.killLeftovers);
  }
}

export async function startFederation(options: FederationOptions = {}): Promise<RunningFederation> {
  const host = options.host ?? '127.0.0.1';
  const group = new ProcessGroup();
  try {
    const flotilla = await startProcess(group.children, 'flotilla', FLOTILLA_BIN, ['serve'], {
      env: {
        ...(options.flotillaEnv ?? process.env),
        FLOTILLA_HOST: host,
        FLOTILLA_PORT: String(options.flotillaPort ?? 0),
      },
      // The first start also prints the minted admin token right after the URL.
      ready: /serving GraphiQL at (\S+)[\s\S]*?(?:Bearer ([\w.-]+)|Authenticate with a token)/,
      onOutput: options.onOutput,
    });
    const flotillaUrl = flotilla[1];
    const usage = await startProcess(group.children, 'usage', process.execPath, ['--import', 'tsx', USAGE_SERVER], {
      env: {
        ...process.env,
        USAGE_HOST: host,
        USAGE_PORT: String(options.usagePort ?? 0),
        FLOTILLA_GRAPHQL_URL: flotillaUrl,
      },
      ready: /listening at (\S+)/,
      onOutput: options.onOutput,
    });
    const usageUrl = usage[1];

    const gateway = await launchGateway(
      group,
      [
        { name: FLOTILLA_SUBGRAPH, url: flotillaUrl, sdl: readFileSync(FLOTILLA_SUBGRAPH_SDL, 'utf8') },
        { name: USAGE_SUBGRAPH, url: usageUrl, sdl: USAGE_TYPE_DEFS },
      ],
      { host, port: options.gatewayPort, onOutput: options.onOutput, flotillaGraphqlUrl: flotillaUrl },
    );
    return {
      ...gateway,
      flotillaUrl,
      usageUrl,
      adminToken: flotilla[2] ?? null,
      stop: () => group.stop(),
    };
  } catch (err) {
    await group.stop();
    throw err;
  }
}

export interface GatewayOptions {
  host?: string;
  /** 0 or unset picks a free port. */
  port?: number;
  onOutput?: (line: string) => void;
  /** Where the gateway checks a subscriber's token before subscribing (see gateway.config.ts). */
  flotillaGraphqlUrl?: string;
}

/** Composes the given subgraphs and serves them with Hive Gateway and gateway.config.ts. */
export async function startGateway(
  subgraphs: readonly SubgraphSource[],
  options: GatewayOptions = {},
): Promise<{ gatewayUrl: string; supergraphFile: string; stop(): Promise<void> }> {
  const group = new ProcessGroup();
  try {
    return { ...(await launchGateway(group, subgraphs, options)), stop: () => group.stop() };
  } catch (err) {
    await group.stop();
    throw err;
  }
}

async function launchGateway(
  group: ProcessGroup,
  subgraphs: readonly SubgraphSource[],
  options: GatewayOptions,
): Promise<{ gatewayUrl: string; supergraphFile: string }> {
  const host = options.host ?? '127.0.0.1';
  const { supergraphSdl } = composeSupergraph(subgraphs);
  const supergraphFile = join(mkdtempSync(join(tmpdir(), 'flotilla-supergraph-')), 'supergraph.graphql');
  writeFileSync(supergraphFile, supergraphSdl);

  const port = options.port || (await freePort(host));
  const gateway = spawnLogged(
    group.children,
    'gateway',
    process.execPath,
    [
      GATEWAY_BIN,
      'supergraph',
      supergraphFile,
      '--config-path',
      GATEWAY_CONFIG,
      '--host',
      host,
      '--port',
      String(port),
    ],
    // The config file is TypeScript; tsx lets Node load it.
    {
      ...process.env,
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import tsx`.trim(),
      ...(options.flotillaGraphqlUrl ? { FLOTILLA_GRAPHQL_URL: options.flotillaGraphqlUrl } : {}),
    },
    options.onOutput,
  );
  const origin = `http://${host}:${port}`;
  await waitForReadiness(gateway.child, `${origin}/readiness`, gateway.output);
  return { gatewayUrl: `${origin}/graphql`, supergraphFile };
}

interface Logged {
  child: ChildProcess;
  output: () => string;
}

function spawnLogged(
  children: ChildProcess[],
  name: string,
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  onOutput?: (line: string) => void,
): Logged {
  const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  const onData = (chunk: Buffer) => {
    const text = chunk.toString();
    output += text;
    if (onOutput) for (const line of text.split('\n')) if (line.trim()) onOutput(`[${name}] ${line}`);
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  return { child, output: () => output };
}

/** Spawns a process and resolves with the match of `ready` in its output. */
function startProcess(
  children: ChildProcess[],
  name: string,
  command: string,
  args: string[],
  opts: { env: NodeJS.ProcessEnv; ready: RegExp; onOutput?: (line: string) => void },
): Promise<RegExpExecArray> {
  const logged = spawnLogged(children, name, command, args, opts.env, opts.onOutput);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new Error(`${name} did not start within ${START_TIMEOUT_MS} ms:\n${logged.output()}`)),
      START_TIMEOUT_MS,
    );
    const check = () => {
      const match = opts.ready.exec(logged.output());
      if (match) {
        clearTimeout(timer);
        logged.child.stdout?.off('data', check);
        logged.child.stderr?.off('data', check);
        logged.child.off('exit', onExit);
        resolve(match);
      }
    };
    const onExit = (code: number | null) =>
      fail(new Error(`${name} exited with ${code} before it was ready:\n${logged.output()}`));
    function fail(err: Error) {
      clearTimeout(timer);
      logged.child.off('exit', onExit);
      reject(err);
    }
    logged.child.stdout?.on('data', check);
    logged.child.stderr?.on('data', check);
    logged.child.on('exit', onExit);
  });
}

async function waitForReadiness(child: ChildProcess, url: string, output: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}:\n${output()}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, READINESS_POLL_MS));
  }
  throw new Error(`gateway was not ready within ${START_TIMEOUT_MS} ms:\n${output()}`);
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
