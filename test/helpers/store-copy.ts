import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import pg from 'pg';
import { expect } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { openOrm } from '../../src/db/orm.js';
import { tempDir } from './databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  type Result,
  registerWorker,
} from './fleet.js';
import { localId, type TestServer } from './server.js';

/** Helpers of the backup/restore and migrate-store tests: the CLI as a subprocess, fleets, table dumps, logs. */

const BIN = resolve('bin/flotilla.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `flotilla …` as a user's shell would (no FLOTILLA_* of the test runner). */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('FLOTILLA_')) clean[k] = v;
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...clean, FLOTILLA_DATA_DIR: tempDir('flotilla-cli-'), FLOTILLA_LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

export interface Fleet {
  tenantId: string;
  sandboxId: string;
  /** An API token of the tenant (OPERATOR), minted before any copy. */
  operatorToken: string;
}

/** A tenant with a worker, a placed sandbox whose lease the worker holds, an API token and a few messages. */
export async function buildFleet(server: TestServer, messages = 3): Promise<Fleet> {
  const tenantId = await createTenant(server, `fleet-${Math.random().toString(36).slice(2, 8)}`);
  const worker = await registerWorker(server, `worker-${Math.random().toString(36).slice(2, 8)}`);
  const created = await createSandbox(server, tenantId);
  expect(created.__typename, JSON.stringify(created)).toBe('SandboxPayload');
  const lease = await acquireLease(server, worker, created.sandbox.id);
  expect(lease.__typename, JSON.stringify(lease)).toBe('LeasePayload');
  const operatorToken = await server.apiToken(localId(tenantId), 'OPERATOR');
  for (let i = 0; i < messages; i++) await sendMessage(server, created.sandbox.id, `hello ${i}`);
  return { tenantId, sandboxId: created.sandbox.id, operatorToken };
}

export async function sendMessage(server: TestServer, sandboxId: string, body: string, token?: string): Promise<void> {
  const res = await server.gql<{ sendMessage: Result<object> }>(
    `mutation($input: SendMessageInput!) { sendMessage(input: $input) { __typename ... on MessagePayload { __typename } ${ERROR_FIELDS} } }`,
    { input: { sandboxId, body } },
    token,
  );
  const result = dataOf(res).sendMessage;
  expect(result.__typename, JSON.stringify(result)).toBe('MessagePayload');
}

export interface LoggedEvent {
  cursor: string;
  type: string;
}

/** Every event of a tenant after the cursor, in log order (paged). */
export async function eventsAfter(
  server: TestServer,
  tenantId: string,
  after: string | null,
  token?: string,
): Promise<LoggedEvent[]> {
  const out: LoggedEvent[] = [];
  let cursor = after;
  for (;;) {
    const res = await server.gql<{
      events: { edges: { cursor: string; node: { type: string } }[]; pageInfo: { hasNextPage: boolean } };
    }>(
      'query($t: ID!, $a: String) { events(tenantId: $t, after: $a, first: 100) { edges { cursor node { type } } pageInfo { hasNextPage } } }',
      { t: tenantId, a: cursor },
      token,
    );
    const page = dataOf(res).events;
    out.push(...page.edges.map((e) => ({ cursor: e.cursor, type: e.node.type })));
    if (!page.pageInfo.hasNextPage || page.edges.length === 0) return out;
    cursor = page.edges[page.edges.length - 1].cursor;
  }
}

/** Every message of a sandbox after the cursor, oldest first (paged): [cursor, body]. */
export async function messagesAfter(
  server: TestServer,
  sandboxId: string,
  after: string | null,
): Promise<{ cursor: string; body: string }[]> {
  const out: { cursor: string; body: string }[] = [];
  let cursor = after;
  for (;;) {
    const res = await server.gql<{
      messages: { edges: { cursor: string; node: { body: string } }[]; pageInfo: { hasNextPage: boolean } };
    }>(
      'query($s: ID!, $a: String) { messages(sandboxId: $s, after: $a, first: 100) { edges { cursor node { body } } pageInfo { hasNextPage } } }',
      { s: sandboxId, a: cursor },
    );
    const page = dataOf(res).messages;
    out.push(...page.edges.map((e) => ({ cursor: e.cursor, body: e.node.body })));
    if (!page.pageInfo.hasNextPage || page.edges.length === 0) return out;
    cursor = page.edges[page.edges.length - 1].cursor;
  }
}

/** Flotilla's tables, as the tests read them directly (not through the code under test). */
export const TABLES = [
  'tenants',
  'members',
  'workers',
  'sandboxes',
  'leases',
  'port_allocations',
  'messages',
  'events',
  'event_log_state',
  'audit_entries',
  'api_tokens',
  'signing_keys',
] as const;
export type TableName = (typeof TABLES)[number];

/**
 * Each table's rows as sorted JSON lines, read with plain SQL. Values are normalised only as far
 * as the drivers differ (SQLite: epoch-millisecond timestamps, JSON text and booleans as 0/1;
 * Postgres: Dates, parsed JSON, booleans and 64-bit integers as strings), so the same data dumps the same on both.
 */
export async function dumpTables(databaseUrl: string): Promise<Record<TableName, string[]>> {
  const target = parseDatabaseUrl(databaseUrl);
  const out = {} as Record<TableName, string[]>;
  if (target.kind === 'sqlite') {
    const orm = await openOrm(target);
    try {
      for (const table of TABLES) {
        const columns = (await orm.em.getConnection().execute(`pragma table_info("${table}")`)) as {
          name: string;
          type: string;
        }[];
        const rows = (await orm.em.getConnection().execute(`select * from "${table}"`)) as Record<string, unknown>[];
        out[table] = rows.map((row) => normalRow(row, (c) => columns.find((x) => x.name === c)?.type ?? '')).sort();
      }
    } finally {
      await orm.close(true);
    }
    return out;
  }
  const client = new pg.Client({ connectionString: target.location });
  await client.connect();
  try {
    for (const table of TABLES) {
      const columns = await client.query(
        'select column_name, data_type from information_schema.columns where table_name = $1',
        [table],
      );
      const typeOf = (c: string) =>
        (columns.rows as { column_name: string; data_type: string }[]).find((x) => x.column_name === c)?.data_type ??
        '';
      const rows = await client.query(`select * from "${table}"`);
      out[table] = (rows.rows as Record<string, unknown>[]).map((row) => normalRow(row, typeOf)).sort();
    }
  } finally {
    await client.end();
  }
  return out;
}

function normalRow(row: Record<string, unknown>, typeOf: (column: string) => string): string {
  const entries = Object.keys(row)
    .sort()
    .map((column) => {
      const type = typeOf(column).toLowerCase();
      let value = row[column];
      if (value !== null && /datetime|timestamp/.test(type)) value = new Date(value as string | number).toISOString();
      else if (value !== null && /json/.test(type))
        value = sortKeys(typeof value === 'string' ? JSON.parse(value) : value);
      else if (value !== null && /bool/.test(type)) value = value === true || Number(value) === 1 ? '1' : '0';
      else if (value !== null && /int/.test(type)) value = String(value);
      return [column, value];
    });
  return JSON.stringify(entries);
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(
      Object.keys(value as object)
        .sort()
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  return value;
}
