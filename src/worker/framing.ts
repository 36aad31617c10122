import type { StdinFraming } from '../client/index.js';

/** What the worker knows of a message it writes to a process's stdin. */
export interface InputMessage {
  id: string;
  threadId: string;
  channel: string;
  senderKind: string;
  senderId: string;
  body: string;
  /** Questions and answers (issue 16, part 1) give a message a kind and, for an answer, its question's id. */
  kind?: string | null;
  questionId?: string | null;
}

/**
 * The bytes one message becomes on the process's stdin. PLAIN: the body and a newline (so a
 * multi-line body reads as several lines). JSON_LINES: exactly one line, a JSON object; newlines
 * inside the body are escaped by JSON, so a multi-line message is one message.
 */
export function frameMessage(message: InputMessage, framing: StdinFraming): string {
  if (framing === 'PLAIN') return `${message.body}\n`;
  const frame = {
    id: message.id,
    threadId: message.threadId,
    channel: message.channel,
    senderKind: message.senderKind,
    senderId: message.senderId,
    body: message.body,
    // Null until the Message type carries them (issue 16 part 1): add them to MessageFields and they flow through.
    kind: message.kind ?? null,
    questionId: message.questionId ?? null,
  };
  return `${JSON.stringify(frame)}\n`;
}
