/**
 * How a worker runs a sandbox. The reference agent ships the "process" runtime (a child
 * process on this machine); container runtimes implement the same interface.
 */
export interface SandboxSpec {
  sandboxId: string;
  name: string;
  image: string;
  command: string[];
  cpuMillis: number;
  memoryMb: number;
  env: Record<string, string>;
}

export interface RuntimeHandlers {
  /** One line of output (without its newline), from stdout or stderr. */
  onLine(stream: 'stdout' | 'stderr', line: string): void;
  /** The sandbox ended: an exit code, or the signal that ended it. */
  onExit(exit: { code: number | null; signal: string | null }): void;
}

export interface RunningSandbox {
  readonly pid: number | undefined;
  /** Writes to the sandbox's standard input; true once written, false when its stdin is closed or it ended. */
  write(text: string): Promise<boolean>;
  /** Asks it to stop (SIGTERM), then forces it (SIGKILL) after `graceMs`. Resolves on exit. */
  stop(graceMs: number): Promise<void>;
  readonly exited: boolean;
}

export interface SandboxRuntime {
  readonly name: string;
  start(spec: SandboxSpec, handlers: RuntimeHandlers): RunningSandbox;
}
