import { spawn } from 'node:child_process';
import { BIN } from './processes.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment a user's shell would give the CLI: the test runner's FLOTILLA_* settings left out. */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('FLOTILLA_')) env[k] = v;
  return { ...env, ...extra };
}

/** A command still running after this long is killed (a command that should have ended, e.g. a refused serve). */
export const CLI_TIMEOUT_MS = 30_000;

/** Runs `flotilla ARGS` to its end (killed after CLI_TIMEOUT_MS: code null) with only the given FLOTILLA_* settings. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
  options: { nodeFlags?: string[] } = {},
): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [...(options.nodeFlags ?? []), BIN, ...args], {
      env: cleanEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}
