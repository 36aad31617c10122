import {
  type FlotillaClient,
  MessageAddedDocument,
  MessagesDocument,
  type MessagesQuery,
  type Result,
} from '../client/index.js';
import { type AnswerMessage, answerLine } from './answers.js';
import type { RunningSandbox } from './runtime.js';

/** The run whose process receives the input, read live (its process and state change). */
export interface RelayTarget {
  readonly sandbox: { id: string };
  readonly process: RunningSandbox | null;
  readonly lost: boolean;
  readonly abort: AbortController;
}

/**
 * People's messages to a sandbox reach its process's standard input: live from the messageAdded
 * stream, and by reading the messages after the last one seen, so input the stream missed still
 * arrives. Each message is written once.
 */
export class StdinRelay {
  /** Connection cursor of the last message seen: input after it goes to the process. */
  cursor: string | null = null;
  /** Ids of messages already written to stdin (the live stream and catch-up may both see one). */
  private readonly relayed = new Set<string>();

  constructor(
    private readonly client: FlotillaClient,
    private readonly run: RelayTarget,
    private readonly pageSize: number,
    private readonly warn: (msg: string, data: Record<string, unknown>) => void,
  ) {}

  /** Messages that exist before the process starts are history, not input for it. */
  async skipHistory(): Promise<void> {
    this.cursor = await this.lastMessageCursor();
  }

  /** Follows the live stream until the run is aborted. */
  async follow(): Promise<void> {
    const run = this.run;
    try {
      const stream = this.client.subscribe(
        MessageAddedDocument,
        { sandboxId: run.sandbox.id, after: null },
        {
          signal: run.abort.signal,
          cursorOf: (d) => d.messageAdded.eventCursor,
          onResumed: () => void this.catchUp(),
        },
      );
      for await (const { messageAdded } of stream) this.deliver(messageAdded);
    } catch (err) {
      if (!run.abort.signal.aborted)
        this.warn('input relay ended', { sandboxId: run.sandbox.id, error: (err as Error).message });
    }
  }

  /** Reads the messages after the last one seen, so input missed by the live stream still arrives. */
  async catchUp(): Promise<void> {
    const run = this.run;
    if (!run.process || run.process.exited || run.lost) return;
    for (;;) {
      const page = await this.client.query(MessagesDocument, {
        sandboxId: run.sandbox.id,
        first: this.pageSize,
        after: this.cursor,
      });
      if (!page.ok) return;
      for (const edge of page.data.messages.edges) this.deliver(edge.node);
      this.cursor = page.data.messages.pageInfo.endCursor ?? this.cursor;
      if (!page.data.messages.pageInfo.hasNextPage) return;
    }
  }

  private deliver(message: { id: string; senderKind: string; body: string; kind?: string } & AnswerMessage): void {
    if (message.senderKind !== 'USER' || this.relayed.has(message.id) || this.run.lost) return;
    this.relayed.add(message.id);
    this.run.process?.write(message.kind === 'ANSWER' ? answerLine(message) : `${message.body}\n`);
  }

  private async lastMessageCursor(): Promise<string | null> {
    let cursor: string | null = null;
    for (;;) {
      const page: Result<MessagesQuery> = await this.client.query(MessagesDocument, {
        sandboxId: this.run.sandbox.id,
        first: this.pageSize,
        after: cursor,
      });
      if (!page.ok) return cursor;
      cursor = page.data.messages.pageInfo.endCursor ?? cursor;
      if (!page.data.messages.pageInfo.hasNextPage) return cursor;
    }
  }
}
