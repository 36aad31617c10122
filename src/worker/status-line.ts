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

/** A question the process asks people; the worker posts it with postAgentQuestion. */
export interface QuestionLine {
  prompt: string;
  options: string[];
  allowFreeText: boolean;
  threadId?: string;
}

/**
 * A process asks a question by printing one JSON line:
 *   {"flotilla":{"question":{"prompt":"Deploy?","options":["yes","no"],"allowFreeText":false}}}
 * `options` and `allowFreeText` may be left out (none, false); `threadId` is optional. The answer
 * arrives on its standard input as one JSON line (answers.ts). The server checks the limits.
 */
export function parseQuestionLine(line: string): QuestionLine | null {
  if (!line.startsWith('{"flotilla"')) return null;
  try {
    const parsed = JSON.parse(line) as { flotilla?: { question?: Record<string, unknown> } };
    const question = parsed.flotilla?.question;
    if (typeof question !== 'object' || question === null || Array.isArray(question)) return null;
    const { prompt, options = [], allowFreeText = false, threadId } = question;
    if (typeof prompt !== 'string' || typeof allowFreeText !== 'boolean') return null;
    if (!Array.isArray(options) || !options.every((o): o is string => typeof o === 'string')) return null;
    if (threadId !== undefined && typeof threadId !== 'string') return null;
    return { prompt, options, allowFreeText, ...(threadId ? { threadId } : {}) };
  } catch {
    return null;
  }
}
