/** Plain HTTP calls the benchmarks make around their load: GraphQL for seeding and checks, /metrics. */

/** POSTs an operation with a bearer token; throws with the server's errors unless it answered data. */
export async function gql<T>(
  url: string,
  token: string | null,
  query: string,
  variables: Record<string, unknown> = {},
): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data?: T; errors?: unknown[] };
  if (!res.ok || body.errors || !body.data) throw new Error(JSON.stringify(body.errors ?? res.status));
  return body.data;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** GETs a URL, retrying a reset (a kept-alive socket the busy server closed just as it was reused). */
export async function fetchText(url: URL, attempts = 3): Promise<string> {
  for (let i = 1; ; i++) {
    try {
      return await (await fetch(url)).text();
    } catch (err) {
      if (i >= attempts) throw err;
      await sleep(200);
    }
  }
}

/** The server's Prometheus text (its /metrics, next to the GraphQL URL), read one figure at a time. */
export async function readMetrics(graphqlUrl: string): Promise<(name: string) => number> {
  const text = await fetchText(new URL('/metrics', graphqlUrl));
  return (name) => {
    const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
    return match ? Number(match[1]) : Number.NaN;
  };
}
