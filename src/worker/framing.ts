import type { StdinFraming } from '../client/index.js';
import { type AnswerMessage, answerLine } from './answers.js';

/** What the worker knows of a message it writes to a process's stdin. */
export interface InputMessage extends AnswerMessage {
  id: string;
  threadId: string;
  channel: string;
  senderKind: string;
  senderId: string;
  body: string;
  /** MESSAGE, QUESTION or ANSWER (an answer names its question). */
  kind?: string | null;
}

/**
 * The bytes one message becomes on the process's stdin.
 * - PLAIN: the body and a newline (so a multi-line body reads as several lines); an answer to a
 *   question the process asked is its answer line (answers.ts), so the process can tell it apart.
 * - JSON_LINES: exactly one line, a JSON object; newlines inside the body are escaped by JSON, so a
 *   multi-line message is one message. An answer also carries its question's id and the choice or text.
 */
export function frameMessage(message: InputMessage, framing: StdinFraming): string {
  const answer = message.kind === 'ANSWER';
  if (framing === 'PLAIN') return answer ? answerLine(message) : `${message.body}\n`;
  const frame = {
    id: message.id,
    threadId: message.threadId,
    channel: message.channel,
    senderKind: message.senderKind,
    senderId: message.senderId,
    body: message.body,
    kind: message.kind ?? 'MESSAGE',
    questionId: answer ? (message.question?.id ?? null) : null,
    ...(answer ? { choice: message.question?.answerChoice ?? null, text: message.question?.answerText ?? null } : {}),
  };
  return `${JSON.stringify(frame)}\n`;
}
