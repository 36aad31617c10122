import { Question } from '../db/entities/question.js';
import type { Sandbox, SandboxStatus } from '../db/entities/sandbox.js';
import type { Em } from '../db/orm.js';

/**
 * A sandbox moving to one of these ends the process that asked its open questions (or leaves it
 * where no answer can reach it), so they are cancelled in the same transaction.
 */
export const CANCELS_QUESTIONS: readonly SandboxStatus[] = ['STOPPING', 'STOPPED', 'FAILED', 'LOST', 'DELETED'];

/** Cancels the sandbox's open questions (one statement); returns how many. */
export async function cancelOpenQuestions(em: Em, sandbox: Sandbox, now: Date): Promise<number> {
  return em.nativeUpdate(Question, { sandbox: sandbox.id, status: 'OPEN' }, { status: 'CANCELLED', updatedAt: now });
}
