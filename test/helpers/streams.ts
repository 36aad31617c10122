/** Takes `count` items from a client-side stream (SDK subscription), failing after `timeoutMs`. */
export async function takeItems<T>(stream: AsyncIterableIterator<T>, count: number, timeoutMs = 20_000): Promise<T[]> {
  const items: T[] = [];
  const deadline = setTimeout(() => void stream.return?.(), timeoutMs);
  try {
    for await (const item of stream) {
      items.push(item);
      if (items.length >= count) break;
    }
  } finally {
    clearTimeout(deadline);
  }
  if (items.length < count) throw new Error(`only ${items.length} of ${count} items arrived`);
  return items;
}
