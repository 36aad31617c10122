import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** What the agent keeps between restarts. */
export interface WorkerState {
  /** The last workerAssignments cursor handled. */
  cursor?: string | null;
  /** Process group ids of the sandboxes running, by sandbox id. */
  processes?: Record<string, number>;
}

/** The agent's state file in `stateDir`, one per worker; no directory means nothing is kept. */
export class StateFile {
  constructor(private readonly stateDir: string | undefined) {}

  load(workerId: string | null): WorkerState {
    const path = this.pathFor(workerId);
    if (!path) return {};
    try {
      return JSON.parse(readFileSync(path, 'utf8')) as WorkerState;
    } catch {
      return {};
    }
  }

  /** Written to a temporary file and renamed, so a crash never leaves half a file. */
  save(workerId: string | null, state: WorkerState): void {
    const path = this.pathFor(workerId);
    if (!path || !this.stateDir) return;
    mkdirSync(this.stateDir, { recursive: true });
    writeFileSync(`${path}.tmp`, JSON.stringify(state));
    renameSync(`${path}.tmp`, path);
  }

  private pathFor(workerId: string | null): string | null {
    return this.stateDir && workerId ? join(this.stateDir, `worker-${workerId.replace(/[^\w-]/g, '_')}.json`) : null;
  }
}
