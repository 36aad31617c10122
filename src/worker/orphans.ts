import { readFileSync } from 'node:fs';

/**
 * A previous run of the agent that died (SIGKILL, crash) leaves its sandboxes' processes
 * running, their output unread. They cannot be followed again, so they are ended before the
 * sandboxes are resumed (or taken over elsewhere): no sandbox runs twice. Only a process that
 * still carries its sandbox id in its environment is signalled, never a reused pid.
 */
export function endLeftoverProcesses(
  leftovers: Record<string, number>,
  onEnded: (sandboxId: string, pid: number) => void,
): void {
  for (const [sandboxId, pid] of Object.entries(leftovers)) {
    if (!isSandboxProcess(pid, sandboxId)) continue;
    try {
      process.kill(-pid, 'SIGKILL');
      onEnded(sandboxId, pid);
    } catch {
      // gone meanwhile
    }
  }
}

/** Whether `pid` is still the process the runtime started for the sandbox (Linux: /proc). */
function isSandboxProcess(pid: number, sandboxId: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`FLOTILLA_SANDBOX_ID=${sandboxId}`);
  } catch {
    return false; // gone, not ours, or no /proc: leave it alone
  }
}
