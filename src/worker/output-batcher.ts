/**
 * Collects a process's output lines into batches, so a chatty process costs one agent message per
 * batch rather than one per line: `flush` is called once the batch holds `batchBytes`, or
 * `flushMs` after its first line.
 */
export class OutputBatcher {
  private lines: string[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly flush: () => void,
    private readonly flushMs: number,
    private readonly batchBytes: number,
  ) {}

  add(line: string): void {
    this.lines.push(line);
    this.bytes += Buffer.byteLength(line) + 1;
    if (this.bytes >= this.batchBytes) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  get empty(): boolean {
    return this.lines.length === 0;
  }

  /** The batch as one message body; the batcher starts empty again. */
  take(): string {
    const body = this.lines.join('\n');
    this.lines = [];
    this.bytes = 0;
    return body;
  }

  cancelTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
