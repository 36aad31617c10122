import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { RunningSandbox, RuntimeHandlers, SandboxRuntime, SandboxSpec } from './runtime.js';

/**
 * Runs a sandbox's command as a child process of the worker. Limits where the OS allows:
 * address-space size from the sandbox's memory (ulimit -v, through /bin/sh) and a lower
 * scheduling priority; CPU shares need cgroups, which a container runtime provides.
 */
export class ProcessRuntime implements SandboxRuntime {
  readonly name = 'process';

  start(spec: SandboxSpec, handlers: RuntimeHandlers): RunningSandbox {
    if (spec.command.length === 0) throw new Error('the sandbox has no command to run');
    // Address space is generous (×4 + 256 MiB) because runtimes such as Node reserve far more than they use.
    const limitKb = (spec.memoryMb * 4 + 256) * 1024;
    const child = spawn(
      '/bin/sh',
      ['-c', `ulimit -v ${limitKb} 2>/dev/null; exec "$@"`, 'flotilla-sandbox', ...spec.command],
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...spec.env },
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: true, // its own process group, so stop() reaches grandchildren too
      },
    );
    let exited = false;
    const exitPromise = new Promise<void>((resolve) => {
      child.on('exit', (code, signal) => {
        exited = true;
        handlers.onExit({ code, signal });
        resolve();
      });
      child.on('error', (err) => {
        if (exited) return;
        exited = true;
        handlers.onLine('stderr', `failed to start: ${err.message}`);
        handlers.onExit({ code: 127, signal: null });
        resolve();
      });
    });
    createInterface({ input: child.stdout }).on('line', (line) => handlers.onLine('stdout', line));
    createInterface({ input: child.stderr }).on('line', (line) => handlers.onLine('stderr', line));
    child.stdin.on('error', () => undefined); // a process that closed stdin must not crash the worker

    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid) process.kill(-child.pid, signal);
      } catch {
        child.kill(signal);
      }
    };

    return {
      get pid() {
        return child.pid;
      },
      get exited() {
        return exited;
      },
      write(text: string) {
        return new Promise<boolean>((resolve) => {
          if (exited || !child.stdin.writable) return resolve(false);
          // The callback runs once the pipe took the bytes, or with EPIPE when the process closed its stdin.
          child.stdin.write(text, (err) => resolve(!err));
        });
      },
      async stop(graceMs: number) {
        if (exited) return;
        signalGroup('SIGTERM');
        const timer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
        await exitPromise;
        clearTimeout(timer);
      },
    };
  }
}
