import type { TestProject } from 'vitest/node';
import { startTestPostgres, type TestPostgres } from './postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Maintenance URL of the Postgres server every Postgres test creates its database on. */
    pgAdminUrl: string;
  }
}

let server: TestPostgres | null = null;

/** One Postgres for the whole run: DATABASE_URL's, or a throwaway embedded one. Never skipped. */
export async function setup(project: TestProject): Promise<void> {
  server = await startTestPostgres();
  project.provide('pgAdminUrl', server.adminUrl);
}

export async function teardown(): Promise<void> {
  await server?.stop();
}
