import {
  type FlotillaClient,
  MessageAddedDocument,
  ReportMessageDeliveryDocument,
  type StdinFraming,
  UndeliveredMessagesDocument,
} from '../client/index.js';
import { frameMessage, type InputMessage } from './framing.js';
import type { RunningSandbox } from './runtime.js';

/** The run whose process receives the input, read live (its process and state change). */
export interface RelayTarget {
  readonly sandbox: { id: string; stdinFraming?: StdinFraming | null };
  readonly fencingToken: string;
  readonly process: RunningSandbox | null;
  readonly lost: boolean;
  readonly abort: AbortController;
  /** A write was refused: when because the lease moved on, the run stops (sandbox-run.ts). */
  refused(outcome: { __typename?: string; code?: string }): void;
}

type Delivery = 'DISPATCHED' | 'DELIVERED' | 'FAILED';

/**
 * People's messages to a sandbox reach its process's standard input, tracked by their delivery
 * state on the server: the relay reads the sandbox's undelivered messages in commit order, takes
 * them (DISPATCHED, a compare-and-swap from PENDING, so one message is taken once), writes each to
 * stdin and then confirms it (DELIVERED); a write that fails marks it FAILED with the reason. It
 * does so when the process starts, when the live stream shows a new message, after the stream
 * resumes and on every agent tick, one pass at a time.
 */
export class StdinRelay {
  private pass: Promise<void> | null = null;
  private again = false;
  /** Ids this process already received: a confirmation lost on the way is never a second write. */
  private readonly written = new Set<string>();
  /** Written, but DELIVERED is not recorded yet (the report failed): retried first on the next pass. */
  private unconfirmed: string[] = [];

  constructor(
    private readonly client: FlotillaClient,
    private readonly run: RelayTarget,
    private readonly pageSize: number,
    private readonly warn: (msg: string, data: Record<string, unknown>) => void,
  ) {}

  /** Follows the live stream until the run is aborted: a new message starts a delivery pass at once. */
  async follow(): Promise<void> {
    const run = this.run;
    try {
      const stream = this.client.subscribe(
        MessageAddedDocument,
        { sandboxId: run.sandbox.id, after: null },
        {
          signal: run.abort.signal,
          cursorOf: (d) => d.messageAdded.eventCursor,
          onResumed: () => void this.deliver(),
        },
      );
      for await (const { messageAdded } of stream) if (messageAdded.deliveryState === 'PENDING') void this.deliver();
    } catch (err) {
      if (!run.abort.signal.aborted)
        this.warn('input relay ended', { sandboxId: run.sandbox.id, error: (err as Error).message });
    }
  }

  /**
   * Delivers every undelivered message, in commit order. Passes never overlap: a call while one
   * runs asks for one more pass after it, which sees whatever the running one missed.
   */
  deliver(): Promise<void> {
    if (this.pass) {
      this.again = true;
      return this.pass;
    }
    this.pass = (async () => {
      try {
        do {
          this.again = false;
          await this.deliverOnce();
        } while (this.again && this.live());
      } catch (err) {
        this.warn('input delivery failed', { sandboxId: this.run.sandbox.id, error: (err as Error).message });
      } finally {
        this.pass = null;
      }
    })();
    return this.pass;
  }

  /** The process ended: what it never received is FAILED with `reason` (no process will read it). */
  async failUndelivered(reason: string): Promise<void> {
    await this.pass;
    if (this.run.lost) return;
    await this.confirmWritten();
    for (let rounds = 0; rounds < 100; rounds++) {
      const page = await this.undelivered(null);
      const ids = (page?.edges ?? []).map((e) => e.node.id).filter((id) => !this.written.has(id));
      if (ids.length === 0) return;
      const outcome = await this.report(ids, 'FAILED', reason);
      if (!outcome || outcome.changed.length === 0) return;
    }
  }

  /** Records DELIVERED for what was written but whose confirmation did not get through. */
  private async confirmWritten(): Promise<void> {
    while (this.unconfirmed.length > 0) {
      const batch = this.unconfirmed.slice(0, this.pageSize);
      if (!(await this.report(batch, 'DELIVERED'))) return;
      this.unconfirmed = this.unconfirmed.slice(batch.length);
    }
  }

  private live(): boolean {
    const { process, lost } = this.run;
    return !!process && !process.exited && !lost;
  }

  private async deliverOnce(): Promise<void> {
    if (!this.live()) return;
    await this.confirmWritten();
    let after: string | null = null;
    for (;;) {
      if (!this.live()) return;
      const page = await this.undelivered(after);
      if (!page) return;
      const pending = page.edges.map((e) => e.node).filter((m) => m.deliveryState === 'PENDING');
      if (pending.length > 0 && !(await this.deliverBatch(pending))) return;
      if (!page.pageInfo.hasNextPage) return;
      after = page.pageInfo.endCursor ?? after;
    }
  }

  /** Takes, writes and confirms one batch in commit order; false when the process can take no more. */
  private async deliverBatch(pending: InputMessage[]): Promise<boolean> {
    const taken = await this.report(
      pending.map((m) => m.id),
      'DISPATCHED',
    );
    if (!taken) return false;
    const won = new Set(taken.changed.map((m) => m.id));
    const framing = this.run.sandbox.stdinFraming ?? 'PLAIN';
    const delivered: string[] = [];
    const failed: string[] = [];
    for (const message of pending) {
      if (!won.has(message.id)) continue;
      if (this.written.has(message.id)) {
        delivered.push(message.id);
        continue;
      }
      const wrote = failed.length === 0 && (await this.run.process?.write(frameMessage(message, framing)));
      if (wrote) {
        this.written.add(message.id);
        delivered.push(message.id);
      } else failed.push(message.id);
    }
    if (delivered.length > 0 && !(await this.report(delivered, 'DELIVERED'))) this.unconfirmed.push(...delivered);
    if (failed.length > 0) {
      const reason = this.run.process?.exited ? 'the process exited' : "the process's stdin is closed";
      await this.report(failed, 'FAILED', reason);
      return false;
    }
    return true;
  }

  private async undelivered(after: string | null) {
    const result = await this.client.query(UndeliveredMessagesDocument, {
      sandboxId: this.run.sandbox.id,
      first: this.pageSize,
      after,
    });
    if (!result.ok) {
      this.warn('could not read undelivered messages', { sandboxId: this.run.sandbox.id, error: result.error.message });
      return null;
    }
    return result.data.sandbox?.undeliveredMessages ?? null;
  }

  /** One fenced delivery report; null when it was refused or did not reach the server. */
  private async report(
    ids: readonly string[],
    state: Delivery,
    reason?: string,
  ): Promise<{ changed: { id: string }[]; unchangedIds: string[] } | null> {
    if (this.run.lost) return null;
    const result = await this.client.mutate(ReportMessageDeliveryDocument, {
      input: {
        sandboxId: this.run.sandbox.id,
        fencingToken: this.run.fencingToken,
        messageIds: [...ids],
        state,
        reason,
      },
    });
    if (!result.ok) {
      this.warn('delivery report failed', { sandboxId: this.run.sandbox.id, state, error: result.error.message });
      return null;
    }
    const outcome = result.data.reportMessageDelivery;
    if (outcome.__typename !== 'ReportMessageDeliveryPayload') {
      this.run.refused(outcome as { __typename?: string; code?: string });
      return null;
    }
    return outcome;
  }
}
