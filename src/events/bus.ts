/**
 * Wakes this process's subscription hub when events may have been committed. On SQLite it is
 * the whole story; on Postgres the hub also listens to NOTIFY from other replicas.
 */
export interface EventBus {
  /** Called after a transaction that appended events has committed. */
  committed(): void;
  /** Registers a wake-up listener; returns its removal. */
  onCommitted(listener: () => void): () => void;
}

export class InProcessBus implements EventBus {
  private readonly listeners = new Set<() => void>();

  committed(): void {
    for (const listener of this.listeners) listener();
  }

  onCommitted(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
