/** How long one turn of the event loop may spend delivering before it yields to I/O (requests); see HAND_OVER_PER_TURN. */
export const DELIVERY_SLICE_MS = 1;

/**
 * Paces a large fan-out: deliveries run until the current slice of time is used up, then the
 * rest wait for the next turn of the event loop (setImmediate), in arrival order. Requests and
 * socket I/O get a turn between slices, so 10,000 deliveries never stall the process.
 */
export class DeliveryGate {
  private sliceStart = -1;
  private readonly waiting: (() => void)[] = [];
  private scheduled = false;

  constructor(private readonly sliceMs: number = DELIVERY_SLICE_MS) {}

  /** Resolves when this delivery may go: at once within the slice, else on a later turn. */
  turn(): Promise<void> | undefined {
    const now = performance.now();
    if (this.sliceStart < 0) {
      this.sliceStart = now;
      this.schedule();
    }
    if (this.waiting.length === 0 && now - this.sliceStart < this.sliceMs) return undefined;
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  get queued(): number {
    return this.waiting.length;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.nextSlice());
  }

  /** A new slice: release waiters until it is used up; their work runs as microtasks of this turn. */
  private nextSlice(): void {
    this.scheduled = false;
    this.sliceStart = -1;
    if (this.waiting.length === 0) return;
    this.sliceStart = performance.now();
    this.schedule();
    this.releaseWithinSlice();
  }

  private releaseWithinSlice(): void {
    // Released waiters continue as microtasks, after this function; release in small steps and
    // re-check the clock in a microtask, so a slice stays near its budget.
    const resolve = this.waiting.shift();
    if (!resolve) return;
    resolve();
    queueMicrotask(() => {
      if (this.waiting.length > 0 && performance.now() - this.sliceStart < this.sliceMs) this.releaseWithinSlice();
    });
  }
}
