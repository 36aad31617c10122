/** One event of a `text/event-stream` body: its `event:` name (if any) and its `data:` lines joined. */
export interface ServerSentEvent {
  event: string | undefined;
  data: string;
}

/**
 * Reads a `text/event-stream` body into events, one per blank-line-separated block. The one SSE
 * reader of the project: the SDK and the tests both use it.
 */
export async function* readServerSentEvents(body: AsyncIterable<Uint8Array>): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, '\n');
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event: string | undefined;
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (event !== undefined || data.length > 0) yield { event, data: data.join('\n') };
    }
  }
}
