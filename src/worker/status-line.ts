const AGENT_PHASES = new Set(['IDLE', 'THINKING', 'EXECUTING', 'WAITING_FOR_INPUT', 'DONE', 'ERROR']);

/**
 * A process updates its agent status by printing one JSON line:
 *   {"flotilla":{"phase":"THINKING","activity":"reading the repo"}}
 */
export function parseStatusLine(
  line: string,
): { phase: 'IDLE' | 'THINKING' | 'EXECUTING' | 'WAITING_FOR_INPUT' | 'DONE' | 'ERROR'; activity?: string } | null {
  if (!line.startsWith('{"flotilla"')) return null;
  try {
    const parsed = JSON.parse(line) as { flotilla?: { phase?: unknown; activity?: unknown } };
    const phase = parsed.flotilla?.phase;
    if (typeof phase !== 'string' || !AGENT_PHASES.has(phase)) return null;
    const activity = typeof parsed.flotilla?.activity === 'string' ? parsed.flotilla.activity.slice(0, 500) : undefined;
    return { phase: phase as 'IDLE', ...(activity ? { activity } : {}) };
  } catch {
    return null;
  }
}
