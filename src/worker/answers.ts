/** What the relay knows of an ANSWER message (MessageFields). */
export interface AnswerMessage {
  body: string;
  question?: { id: string; answerChoice?: string | null; answerText?: string | null } | null;
}

/**
 * The line an ANSWER message becomes on the process's standard input (with its newline):
 *   {"flotilla":{"answer":{"questionId":"…","choice":"yes","text":null}}}
 * `questionId` is the question's global id; exactly one of `choice` and `text` is set.
 */
export function answerLine(message: AnswerMessage): string {
  const question = message.question ?? null;
  const choice = question?.answerChoice ?? null;
  const text = choice === null ? (question?.answerText ?? message.body) : null;
  return `${JSON.stringify({ flotilla: { answer: { questionId: question?.id ?? null, choice, text } } })}\n`;
}
