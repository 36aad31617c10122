import { expect } from 'vitest';
import type { Clock } from '../../src/domain/context.js';
import type { GraphQLResponse, TestServer } from './server.js';

/**
 * A clock the test moves by hand; starts at the real now so minted tokens are valid. It is
 * authoritative: lease expiry and heartbeat age follow it on Postgres too (not the database's clock).
 */
export class TestClock implements Clock {
  readonly authoritative = true;
  private current = Date.now();
  now(): Date {
    return new Date(this.current);
  }
  advance(seconds: number): void {
    this.current += seconds * 1000;
  }
}

/** Fails the test with the server's errors when a GraphQL call did not succeed. */
export function dataOf<T>(res: GraphQLResponse<T>): T {
  expect(res.body.errors, JSON.stringify(res.body.errors)).toBeUndefined();
  expect(res.status).toBe(200);
  return res.body.data as T;
}

export const ERROR_FIELDS = `... on Error { __typename message code }`;

export const SANDBOX_FIELDS = `id name status stateVersion statusReason exitCode image startedAt stoppedAt expiresAt
  resources { cpuMillis memoryMb } labels worker { id name } lease { fencingToken transitions holder { id } }
  agent { phase activity }`;

export interface SandboxView {
  id: string;
  name: string;
  status: string;
  stateVersion: number;
  statusReason: string | null;
  exitCode: number | null;
  worker: { id: string; name: string } | null;
  lease: { fencingToken: string; transitions: number; holder: { id: string } } | null;
  agent: { phase: string; activity: string | null } | null;
  startedAt: string | null;
  stoppedAt: string | null;
  expiresAt: string | null;
}

/** A mutation result: the payload's fields, or an error's __typename and code. */
export type Result<T> = T & { __typename: string; code?: string; message?: string };

export async function createTenant(
  server: TestServer,
  slug: string,
  options: { quota?: Record<string, number>; policy?: Record<string, unknown> } = {},
): Promise<string> {
  const res = await server.gql<{ createTenant: { tenant: { id: string } } }>(
    `mutation($input: CreateTenantInput!) { createTenant(input: $input) { ... on CreateTenantPayload { tenant { id } } ${ERROR_FIELDS} } }`,
    { input: { slug, name: slug, ...options } },
  );
  const id = dataOf(res).createTenant.tenant?.id;
  expect(id, JSON.stringify(res.body)).toBeTruthy();
  return id;
}

export interface RegisteredWorker {
  id: string;
  name: string;
  token: string;
}

export async function registerWorker(
  server: TestServer,
  name: string,
  options: {
    cpuMillis?: number;
    memoryMb?: number;
    tenantId?: string;
    labels?: Record<string, string>;
    region?: string;
    token?: string;
    ports?: { from: number; to: number; publicBaseUrl?: string | null };
  } = {},
): Promise<RegisteredWorker> {
  const res = await server.gql<{ registerWorker: Result<{ worker: { id: string; name: string }; token: string }> }>(
    `mutation($input: RegisterWorkerInput!) { registerWorker(input: $input) { __typename ... on RegisterWorkerPayload { token worker { id name } } ${ERROR_FIELDS} } }`,
    {
      input: {
        name,
        capacity: { cpuMillis: options.cpuMillis ?? 4000, memoryMb: options.memoryMb ?? 8192 },
        tenantId: options.tenantId,
        labels: options.labels,
        region: options.region,
        ports: options.ports,
      },
    },
    options.token,
  );
  const result = dataOf(res).registerWorker;
  expect(result.__typename, JSON.stringify(result)).toBe('RegisterWorkerPayload');
  return { id: result.worker.id, name: result.worker.name, token: result.token };
}

export async function createSandbox(
  server: TestServer,
  tenantId: string,
  input: Record<string, unknown> = {},
  token?: string,
): Promise<Result<{ sandbox: SandboxView }>> {
  const res = await server.gql<{ createSandbox: Result<{ sandbox: SandboxView }> }>(
    `mutation($input: CreateSandboxInput!) { createSandbox(input: $input) { __typename ... on SandboxPayload { sandbox { ${SANDBOX_FIELDS} } } ${ERROR_FIELDS} } }`,
    {
      input: {
        tenantId,
        name: 'agent',
        image: 'ghcr.io/acme/agent:1',
        command: ['python', '-m', 'agent'],
        resources: { cpuMillis: 500, memoryMb: 512 },
        ...input,
      },
    },
    token,
  );
  return dataOf(res).createSandbox;
}

export async function getSandbox(server: TestServer, id: string, token?: string): Promise<SandboxView | null> {
  const res = await server.gql<{ sandbox: SandboxView | null }>(
    `query($id: ID!) { sandbox(id: $id) { ${SANDBOX_FIELDS} } }`,
    { id },
    token,
  );
  return dataOf(res).sandbox;
}

export interface LeaseView {
  fencingToken: string;
  transitions: number;
  expiresAt: string;
  holder: { id: string };
}

const LEASE_RESULT = `__typename ... on LeasePayload { lease { fencingToken transitions expiresAt holder { id } } } ${ERROR_FIELDS}
  ... on StaleFencingTokenError { presented current }`;

export async function acquireLease(
  server: TestServer,
  worker: RegisteredWorker,
  sandboxId: string,
  ttlSeconds = 30,
): Promise<Result<{ lease: LeaseView }>> {
  const res = await server.gql<{ acquireLease: Result<{ lease: LeaseView }> }>(
    `mutation($input: AcquireLeaseInput!) { acquireLease(input: $input) { ${LEASE_RESULT} } }`,
    { input: { sandboxId, ttlSeconds } },
    worker.token,
  );
  return dataOf(res).acquireLease;
}

export async function renewLease(
  server: TestServer,
  worker: RegisteredWorker,
  sandboxId: string,
  fencingToken: string,
  ttlSeconds = 30,
): Promise<Result<{ lease: LeaseView }>> {
  const res = await server.gql<{ renewLease: Result<{ lease: LeaseView }> }>(
    `mutation($input: RenewLeaseInput!) { renewLease(input: $input) { ${LEASE_RESULT} } }`,
    { input: { sandboxId, fencingToken, ttlSeconds } },
    worker.token,
  );
  return dataOf(res).renewLease;
}

export async function releaseLease(
  server: TestServer,
  worker: RegisteredWorker,
  sandboxId: string,
  fencingToken: string,
): Promise<Result<{ lease: LeaseView }>> {
  const res = await server.gql<{ releaseLease: Result<{ lease: LeaseView }> }>(
    `mutation($input: ReleaseLeaseInput!) { releaseLease(input: $input) { ${LEASE_RESULT} } }`,
    { input: { sandboxId, fencingToken } },
    worker.token,
  );
  return dataOf(res).releaseLease;
}

export async function reportStatus(
  server: TestServer,
  worker: RegisteredWorker,
  sandboxId: string,
  fencingToken: string,
  status: string,
  extra: { reason?: string; exitCode?: number } = {},
): Promise<Result<{ sandbox: SandboxView }>> {
  const res = await server.gql<{ reportSandboxStatus: Result<{ sandbox: SandboxView }> }>(
    `mutation($input: ReportSandboxStatusInput!) { reportSandboxStatus(input: $input) { __typename ... on SandboxPayload { sandbox { ${SANDBOX_FIELDS} } } ${ERROR_FIELDS} } }`,
    { input: { sandboxId, fencingToken, status, ...extra } },
    worker.token,
  );
  return dataOf(res).reportSandboxStatus;
}

export async function heartbeat(
  server: TestServer,
  worker: RegisteredWorker,
  input: Record<string, unknown> = {},
): Promise<Result<{ worker: { status: string } }>> {
  const res = await server.gql<{ heartbeat: Result<{ worker: { status: string } }> }>(
    `mutation($input: HeartbeatInput!) { heartbeat(input: $input) { __typename ... on WorkerPayload { worker { status lastHeartbeatAt } } ${ERROR_FIELDS} } }`,
    { input },
    worker.token,
  );
  return dataOf(res).heartbeat;
}

/** Random enough to keep names unique across the tests of one database. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}
