import { type Config, describeDatabase } from '../config/index.js';
import { backupStore, restoreStore } from './backup.js';
import { migrateStore, parseStoreUrls } from './migrate-store.js';
import { StoreOperationError } from './store-errors.js';
import { describeSummaries } from './store-tables.js';

/** The CLI's `backup`, `restore` and `migrate-store` commands: run, print a report, return the exit code. */

export type Output = { out: (line: string) => void; err: (line: string) => void };
const STDIO: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

async function reported(command: string, io: Output, run: () => Promise<void>): Promise<number> {
  try {
    await run();
    return 0;
  } catch (err) {
    if (err instanceof StoreOperationError) {
      io.err(`flotilla ${command}: ${err.message} [${err.failure}]`);
      return 1;
    }
    throw err;
  }
}

export function backupCommand(config: Config, out: string | undefined, io: Output = STDIO): Promise<number> {
  if (!out) {
    io.err('flotilla backup needs --out FILE');
    return Promise.resolve(2);
  }
  return reported('backup', io, async () => {
    const report = await backupStore(config.databaseUrl, out);
    io.out(
      `backed up ${describeDatabase(config.databaseUrl)} to ${report.file} (${report.manifest.method}, schema ${report.manifest.migrations.at(-1) ?? 'none'})`,
    );
    for (const line of describeSummaries(report.summaries)) io.out(line);
  });
}

export function restoreCommand(
  config: Config,
  from: string | undefined,
  force: boolean,
  io: Output = STDIO,
): Promise<number> {
  if (!from) {
    io.err('flotilla restore needs --from FILE');
    return Promise.resolve(2);
  }
  return reported('restore', io, async () => {
    const report = await restoreStore(config.databaseUrl, from, { force });
    io.out(`restored ${describeDatabase(config.databaseUrl)} from ${from}`);
    if (report.safetyCopy) io.out(`safety copy of the replaced contents: ${report.safetyCopy}`);
    if (report.transactionIdsAdvanced)
      io.out(`advanced the cluster's transaction ids by ${report.transactionIdsAdvanced} (new events sort last)`);
    for (const line of describeSummaries(report.summaries)) io.out(line);
  });
}

export function migrateStoreCommand(
  from: string | undefined,
  to: string | undefined,
  force: boolean,
  io: Output = STDIO,
): Promise<number> {
  if (!from || !to) {
    io.err('flotilla migrate-store needs --from sqlite:PATH and --to postgres://…');
    return Promise.resolve(2);
  }
  return reported('migrate-store', io, async () => {
    const { source, target } = parseStoreUrls(from, to);
    const report = await migrateStore(source, target, { force });
    io.out(`copied ${report.source} to ${report.target}; every table's count and checksum match:`);
    const width = Math.max(...Object.keys(report.tables).map((n) => n.length));
    for (const [name, { source: s, target: t }] of Object.entries(report.tables))
      io.out(
        `  ${name.padEnd(width)}  ${String(s.rows).padStart(8)} → ${String(t.rows).padEnd(8)} checksum ${t.checksum.slice(0, 16)} ${s.checksum === t.checksum && s.rows === t.rows ? 'ok' : 'DIFFERS'}`,
      );
  });
}
