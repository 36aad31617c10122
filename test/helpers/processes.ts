import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/flotilla.js', import.meta.url));

/** A child process of a test, with its output kept as lines. */
export interface Child {
  process: ChildProcess;
  stdout: string[];
  stderr: string[];
  /** Resolves with the exit code (or the signal) once it ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first stdout line matching, or rejects after `timeoutMs`. */
  waitForLine(match: RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const LINE_TIMEOUT_MS = 20_000;
const children = new Set<Child>();

export function spawnChild(args: string[], env: Record<string, string | undefined> = {}): Child {
  const proc = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const watchers: { match: RegExp; resolve: (line: string) => void }[] = [];
  const collect = (into: string[], check: boolean) => {
    let partial = '';
    return (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        into.push(line);
        if (!check) continue;
        for (const w of [...watchers]) {
          if (w.match.test(line)) {
            watchers.splice(watchers.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    };
  };
  proc.stdout?.on('data', collect(stdout, true));
  proc.stderr?.on('data', collect(stderr, false));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const child: Child = {
    process: proc,
    stdout,
    stderr,
    exited,
    waitForLine(match, timeoutMs = LINE_TIMEOUT_MS) {
      const seen = stdout.find((l) => match.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(
                `no line matching ${match} within ${timeoutMs} ms\nstdout:\n${stdout.join('\n')}\nstderr:\n${stderr.join('\n')}`,
              ),
            ),
          timeoutMs,
        );
        watchers.push({
          match,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        void exited.then(() => {
          clearTimeout(timer);
          reject(
            new Error(
              `exited before a line matching ${match}\nstdout:\n${stdout.join('\n')}\nstderr:\n${stderr.join('\n')}`,
            ),
          );
        });
      });
    },
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
  children.add(child);
  void exited.then(() => children.delete(child));
  return child;
}

/** Kills every child a test started that still runs (afterEach / afterAll). */
export async function killChildren(): Promise<void> {
  await Promise.all([...children].map((c) => c.kill('SIGKILL')));
}

/** Whether a process is alive (signal 0 checks without signalling). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // An exited process whose parent has not reaped it yet (a zombie) is not running any more.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Kills a process group a sandbox left behind, if it is still there. */
export function killGroup(pid: number | null): void {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** The first pid a sandbox script wrote with `echo $$ >> file`. */
export function readPid(file: string): number | null {
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]?.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}
