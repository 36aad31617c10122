/**
 * Writes a new migration for both drivers from the difference between the entities and
 * the schema the existing migrations produce. Usage: npm run migration:create -- <name>
 * The Postgres side needs DATABASE_URL or starts a throwaway server.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseDatabaseUrl } from '../src/config/index.js';
import { migrate, openOrm } from '../src/db/orm.js';
import { startTestPostgres } from '../test/helpers/postgres.js';

const name = process.argv[2] ?? 'change';
const pg = await startTestPostgres();
try {
  for (const kind of ['sqlite', 'postgres'] as const) {
    const url =
      kind === 'sqlite'
        ? `sqlite:${join(mkdtempSync(join(tmpdir(), 'flotilla-mig-')), 'db.sqlite')}`
        : await pg.createDatabase();
    const orm = await openOrm(parseDatabaseUrl(url), { migrationsPath: resolve('src/db/migrations', kind) });
    await migrate(orm);
    const result = await orm.getMigrator().createMigration(resolve('src/db/migrations', kind), false, false, name);
    console.log(kind, result.fileName || '(no changes)');
    await orm.close(true);
  }
} finally {
  await pg.stop();
}
