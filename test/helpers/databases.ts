import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import type { DatabaseKind } from '../../src/config/index.js';
import { createDatabaseOn } from './postgres.js';

/** Every store-facing suite runs once per driver. */
export const DRIVERS: DatabaseKind[] = ['sqlite', 'postgres'];

/** A fresh, empty database of the given kind; returns its FLOTILLA_DATABASE_URL. */
export async function freshDatabaseUrl(kind: DatabaseKind): Promise<string> {
  if (kind === 'sqlite') return `sqlite:${join(mkdtempSync(join(tmpdir(), 'flotilla-test-')), 'flotilla.db')}`;
  return createDatabaseOn(inject('pgAdminUrl'));
}

export function tempDir(prefix = 'flotilla-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
