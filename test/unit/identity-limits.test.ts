import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionResult } from 'graphql';
import { buildSchema, parse } from 'graphql';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Identity } from '../../src/auth/identity.js';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { operationComplexity } from '../../src/server/complexity.js';
import { RateLimiter } from '../../src/server/rate-limit.js';
import { CLOSE_FORBIDDEN, type ClosableSocket, endAtExpiry, SessionRegistry } from '../../src/server/sessions.js';

const BASE_ENV = { FLOTILLA_DATABASE_URL: 'sqlite::memory:' };

function configProblems(env: Record<string, string>): string[] {
  try {
    loadConfig({ ...BASE_ENV, ...env });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe('identity and limits configuration', () => {
  it('parses OIDC issuers and HS256 secrets from JSON environment variables', () => {
    const config = loadConfig({
      ...BASE_ENV,
      FLOTILLA_OIDC_ISSUERS: JSON.stringify([
        {
          issuer: 'https://idp',
          audience: 'api',
          jwksUrl: 'https://idp/jwks',
          groupRoles: [
            { group: 'ops', platformAdmin: true },
            { group: 'a', tenant: 'acme', role: 'ADMIN' },
          ],
        },
      ]),
      FLOTILLA_HS256_ISSUERS: JSON.stringify([{ issuer: 'hs', audience: 'api', secret: 's'.repeat(32) }]),
    });
    expect(config.oidcIssuers[0]).toMatchObject({
      issuer: 'https://idp',
      groupsClaim: 'groups',
      algorithms: ['RS256', 'ES256'],
      jwksCooldownSeconds: 30,
    });
    expect(config.hs256Issuers[0].groupRoles).toEqual([]);
    expect(config).toMatchObject({
      maxBodyBytes: 1024 * 1024,
      introspection: true,
      csrfPrevention: true,
      persistedOperationsOnly: false,
    });
  });

  it('reports every problem with the variable that holds it', () => {
    const problems = configProblems({
      FLOTILLA_OIDC_ISSUERS: '[{"issuer": "x"',
      FLOTILLA_HS256_ISSUERS: JSON.stringify([
        { issuer: 'hs', audience: 'api', secret: 'short' },
        {
          issuer: 'flotilla',
          audience: 'api',
          secret: 's'.repeat(32),
          groupRoles: [{ group: 'g', role: 'OWNER', tenant: 't' }],
        },
      ]),
    });
    expect(problems).toEqual([
      expect.stringMatching(/^FLOTILLA_OIDC_ISSUERS: not valid JSON/),
      'FLOTILLA_HS256_ISSUERS [0.secret]: must be at least 32 bytes',
      expect.stringMatching(
        /^FLOTILLA_HS256_ISSUERS \[1\.groupRoles\.0\]: must be \{"group", "platformAdmin": true\} or/,
      ),
    ]);
    expect(configProblems({ FLOTILLA_PERSISTED_OPERATIONS_ONLY: 'true' })).toEqual([
      'FLOTILLA_PERSISTED_OPERATIONS_ONLY: needs FLOTILLA_PERSISTED_OPERATIONS_FILE',
    ]);
  });

  it('reads issuers from the config file as plain JSON', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'flotilla-config-')), 'config.json');
    writeFileSync(
      file,
      JSON.stringify({
        oidcIssuers: [{ issuer: 'https://idp', audience: 'api', jwksUrl: 'https://idp/jwks', subjectPrefix: 'idp|' }],
        maxAliases: 5,
      }),
    );
    const config = loadConfig({ ...BASE_ENV, FLOTILLA_CONFIG_FILE: file });
    expect(config.oidcIssuers.map((i) => i.subjectPrefix)).toEqual(['idp|']);
    expect(config.maxAliases).toBe(5);
  });

  it("refuses an external issuer that repeats another or the server's own", () => {
    const problems = configProblems({
      FLOTILLA_HS256_ISSUERS: JSON.stringify([{ issuer: 'flotilla', audience: 'api', secret: 's'.repeat(32) }]),
    });
    expect(problems).toEqual([
      expect.stringMatching(/^FLOTILLA_HS256_ISSUERS \[0\.issuer\]: issuer "flotilla" is configured twice/),
    ]);
  });
});

describe('RateLimiter', () => {
  it('admits a burst of perMinute, then refills continuously, per key', () => {
    let now = 0;
    const limiter = new RateLimiter(60, { now: () => new Date(now) });
    for (let i = 0; i < 60; i += 1) expect(limiter.take('a').allowed).toBe(true);
    expect(limiter.take('a')).toEqual({ allowed: false, retryAfterSeconds: 1 });
    expect(limiter.take('b').allowed).toBe(true);
    now += 1_000;
    expect(limiter.take('a').allowed).toBe(true);
    expect(limiter.take('a').allowed).toBe(false);
    expect(() => limiter.enforce('a')).toThrow(/rate limit of 60 operations per minute/);
  });
});

describe('operationComplexity', () => {
  const schema = buildSchema(`
    type Query { items(first: Int): [Item!]! one: Item nodes(ids: [ID!]!): [Item]! }
    type Item { id: ID! children(first: Int): [Item!]! }
  `);
  it('multiplies list fields by their page size, from literals or variables', () => {
    expect(operationComplexity(schema, parse('{ one { id } }'), null, {})).toBe(2);
    expect(operationComplexity(schema, parse('{ items(first: 10) { id } }'), null, {})).toBe(11);
    expect(
      operationComplexity(schema, parse('query($n: Int) { items(first: $n) { children(first: $n) { id } } }'), null, {
        n: 10,
      }),
    ).toBe(1 + 10 * (1 + 10));
    // Without `first` a list costs the default page size.
    expect(operationComplexity(schema, parse('{ items { id } }'), null, {})).toBe(21);
    expect(
      operationComplexity(schema, parse('{ ...F } fragment F on Query { items(first: 2) { id } }'), null, {}),
    ).toBe(3);
    // A list argument costs one selection per element.
    expect(
      operationComplexity(schema, parse('query($ids: [ID!]!) { nodes(ids: $ids) { id } }'), null, {
        ids: Array.from({ length: 500 }, String),
      }),
    ).toBe(501);
  });
});

describe('SessionRegistry', () => {
  const identity = (tokenId: string, subject: string, expiresAt: Date | null): Identity => ({
    subject,
    tokenId,
    source: 'API',
    platformAdmin: false,
    tenantRoles: new Map(),
    workerId: null,
    scopes: new Set(),
    expiresAt,
  });
  const socket = () => {
    const closes: [number, string][] = [];
    const s: ClosableSocket & { closes: [number, string][] } = {
      closes,
      close: (code, reason) => closes.push([code, reason]),
    };
    return s;
  };

  it('ends sockets by token and by subject, and does not fire early for far-away expiries', () => {
    const registry = new SessionRegistry({ now: () => new Date() });
    const a = socket();
    const b = socket();
    const c = socket();
    // Past setTimeout's 24.8-day ceiling: must not close at once.
    registry.add(a, identity('t1', 'alice', new Date(Date.now() + 365 * 24 * 3600 * 1000)));
    registry.add(b, identity('t2', 'alice', null));
    const forgetC = registry.add(c, identity('t3', 'bob', null));
    expect(a.closes).toEqual([]);
    expect(registry.endTokens(['t1'])).toBe(1);
    expect(a.closes).toEqual([[CLOSE_FORBIDDEN, 'token revoked']]);
    expect(registry.endSubject('alice')).toBe(1);
    expect(b.closes).toEqual([[CLOSE_FORBIDDEN, 'access revoked']]);
    forgetC();
    expect(registry.endSubject('bob')).toBe(0);
    expect(registry.size).toBe(0);
  });

  it('closes at once a socket whose token has already expired', () => {
    const registry = new SessionRegistry({ now: () => new Date() });
    const s = socket();
    registry.add(s, identity('t', 'x', new Date(Date.now() - 1)));
    expect(s.closes).toEqual([[CLOSE_FORBIDDEN, 'token expired']]);
    expect(registry.size).toBe(0);
  });
});

describe('endAtExpiry', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A stream whose events the test pushes; `next()` waits until one arrives. */
  function manualStream() {
    const waiting: ((r: IteratorResult<ExecutionResult>) => void)[] = [];
    let returned = false;
    const stream: AsyncIterableIterator<ExecutionResult> = {
      [Symbol.asyncIterator]: () => stream,
      next: () => new Promise((resolve) => waiting.push(resolve)),
      return: async () => {
        returned = true;
        return { done: true, value: undefined };
      },
    };
    return {
      stream,
      push: (value: ExecutionResult) => waiting.shift()?.({ done: false, value }),
      returned: () => returned,
    };
  }

  it('passes events through until the token expires, then ends with UNAUTHENTICATED', async () => {
    vi.useFakeTimers();
    const clock = { now: () => new Date() };
    const source = manualStream();
    const stream = endAtExpiry(source.stream, new Date(Date.now() + 60_000), clock);

    const first = stream.next();
    source.push({ data: { n: 1 } });
    expect(await first).toEqual({ done: false, value: { data: { n: 1 } } });

    const second = stream.next();
    await vi.advanceTimersByTimeAsync(60_000);
    const last = await second;
    expect(last.done).toBe(false);
    expect((last.value as ExecutionResult).errors?.[0].extensions).toEqual({ code: 'UNAUTHENTICATED' });
    expect(source.returned()).toBe(true);
    expect(await stream.next()).toEqual({ done: true, value: undefined });
  });
});
