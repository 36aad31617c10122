import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { limitError } from './errors.js';
import type { Limits } from './limits.js';

export interface OperationParams {
  query?: string | null;
  extensions?: Record<string, unknown> | null;
}

/** Operations known by the sha256 of their text (Apollo's `extensions.persistedQuery.sha256Hash`). */
export class PersistedOperations {
  constructor(private readonly byHash: ReadonlyMap<string, string>) {}

  static fromFile(file: string): PersistedOperations {
    const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new Error(`${file}: expected {"<sha256>": "<query>"}`);
    const map = new Map<string, string>();
    for (const [hash, query] of Object.entries(parsed)) {
      if (typeof query !== 'string') throw new Error(`${file}: the operation ${hash} is not a string`);
      if (sha256(query) !== hash.toLowerCase()) throw new Error(`${file}: ${hash} is not the sha256 of its operation`);
      map.set(hash.toLowerCase(), query);
    }
    return new PersistedOperations(map);
  }

  get(hash: string): string | undefined {
    return this.byHash.get(hash.toLowerCase());
  }
}

export function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Replaces a persisted operation's hash with its text; refuses free-form text in persisted-only mode. */
export function resolvePersisted<P extends OperationParams>(params: P, limits: Limits): P {
  const persisted = params.extensions?.persistedQuery as { sha256Hash?: unknown } | undefined;
  const hash = typeof persisted?.sha256Hash === 'string' ? persisted.sha256Hash : null;
  if (hash !== null) {
    const query = limits.persistedOperations?.get(hash);
    if (!query)
      throw limitError('PERSISTED_QUERY_NOT_FOUND', `no persisted operation has the hash ${hash.slice(0, 64)}`, 400);
    return { ...params, query };
  }
  if (limits.persistedOperationsOnly && params.query) {
    throw limitError(
      'PERSISTED_QUERY_ONLY',
      'this server runs only persisted operations: send extensions.persistedQuery.sha256Hash',
      400,
    );
  }
  return params;
}
