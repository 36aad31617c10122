export interface TakeOptions {
  /** Fail after this long with how many items arrived (default 20 s). */
  timeoutMs?: number;
  /** End the stream once done, as a `for await … break` would (default: leave it open for more). */
  close?: boolean;
}

/**
 * Takes `count` items from a stream: a hub subscription or an SDK subscription. Fails when the
 * stream errors (with its error), ends early, or times out.
 */
export async function take<T>(stream: AsyncIterator<T>, count: number, options: TakeOptions = {}): Promise<T[]> {
  const { timeoutMs = 20_000, close = false } = options;
  const got: T[] = [];
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${got.length} of ${count} items`)), timeoutMs);
  });
  try {
    while (got.length < count) {
      const next = await Promise.race([stream.next(), timeout]);
      if (next.done) throw new Error(`stream ended after ${got.length} of ${count} items`);
      got.push(next.value);
    }
  } catch (err) {
    // A read may still be pending: an async generator would queue an awaited return behind it.
    if (close) void stream.return?.();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (close) await stream.return?.();
  return got;
}
