/**
 * Starting `flotilla serve` as a child process for a benchmark, so the client's work and memory
 * never count against the server: its URL is read from the "serving GraphiQL at" line and, on a
 * fresh database, the admin token from the line that follows.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { tempDir } from '../test/helpers/databases.js';

/** High enough that a benchmark's token never meets the per-token limit: the limiter is not what is measured. */
export const RATE_LIMIT_PER_MINUTE = '1000000';
/** A bound on start-up, so a run always ends. */
const SERVER_START_MS = 60_000;

/** BENCH_CPU_PROFILE_DIR=dir: the server writes a V8 CPU profile there when it stops (read it before optimising). */
const CPU_PROFILE = process.env.BENCH_CPU_PROFILE_DIR
  ? ['--cpu-prof', '--cpu-prof-dir', resolve(process.env.BENCH_CPU_PROFILE_DIR)]
  : [];
/** BENCH_SERVER_NODE_FLAGS: extra Node flags for the server (e.g. --trace-gc), split on spaces. */
const SERVER_NODE_FLAGS = process.env.BENCH_SERVER_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];

export interface ServerProcess {
  child: ChildProcess;
  pid: number;
  url: string;
  adminToken: string | null;
  stop(): Promise<void>;
}

/** The benchmark's environment without any FLOTILLA_ setting of the shell, plus the given ones. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('FLOTILLA_')) env[k] = v;
  return { ...env, ...extra };
}

/**
 * Starts `flotilla serve` on loopback (port 0) with its own data directory; resolves with its
 * URL and, on a fresh database, the admin token it printed. `nodeFlags` go before the script,
 * `env` over the defaults (log level warn, the raised rate limit).
 */
export function startServerProcess(
  databaseUrl: string,
  options: { nodeFlags?: string[]; env?: Record<string, string> } = {},
): Promise<ServerProcess> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      process.execPath,
      [...(options.nodeFlags ?? []), ...CPU_PROFILE, ...SERVER_NODE_FLAGS, resolve('bin/flotilla.js'), 'serve'],
      {
        env: cleanEnv({
          FLOTILLA_DATABASE_URL: databaseUrl,
          FLOTILLA_PORT: '0',
          FLOTILLA_HOST: '127.0.0.1',
          FLOTILLA_DATA_DIR: tempDir('flotilla-bench-'),
          FLOTILLA_LOG_LEVEL: process.env.BENCH_SERVER_LOG_LEVEL ?? 'warn',
          FLOTILLA_RATE_LIMIT_PER_MINUTE: RATE_LIMIT_PER_MINUTE,
          ...options.env,
        }),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let stopping = false;
    const timer = setTimeout(() => reject(new Error(`server did not start: ${out}`)), SERVER_START_MS);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (process.env.BENCH_SERVER_OUTPUT) process.stderr.write(d);
      const url = /serving GraphiQL at (http:\/\/\S+)/.exec(out)?.[1];
      // The token line follows the URL line when one was minted; the last line says so either way.
      const done = /Bearer (\S+)"\}/.exec(out) ?? /Authenticate with a token/.exec(out);
      if (url && done && child.pid !== undefined) {
        clearTimeout(timer);
        const token = /Bearer ([^"\s]+)"/.exec(out)?.[1] ?? null;
        resolvePromise({
          child,
          pid: child.pid,
          url,
          adminToken: token,
          stop: () =>
            new Promise<void>((r) => {
              if (child.exitCode !== null) return r();
              stopping = true;
              child.once('exit', () => r());
              child.kill('SIGTERM');
            }),
        });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      // Its last output (warnings and errors only, at log level warn) says why it died mid-run.
      if (!stopping) console.error(`server exited (code ${code}, signal ${signal}): ${out.slice(-2000)}`);
      reject(new Error(`server exited with ${code}: ${out}`));
    });
  });
}

/** The newest modification time of a file under `dir` (0 when there is none). */
function newestUnder(dir: string): number {
  if (!existsSync(dir)) return 0;
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, statSync(resolve(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/**
 * What `bin/flotilla.js` will run: the compiled build when it is newer than every source file,
 * else the sources through tsx (slower to start; run `npm run build` before benchmarking).
 */
export function serverBuild(): 'dist' | 'sources (dist missing or stale: run npm run build)' {
  const built = resolve('dist/src/cli.js');
  const current =
    existsSync(built) && statSync(built).mtimeMs >= Math.max(newestUnder('src'), newestUnder('resolvers'));
  return current ? 'dist' : 'sources (dist missing or stale: run npm run build)';
}
