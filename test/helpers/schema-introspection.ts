import type { DatabaseKind } from '../../src/config/index.js';
import type { Orm } from '../../src/db/orm.js';

/** table -> column -> "nullable" | "not null", read from the live database. */
export type ColumnMap = Record<string, Record<string, string>>;

export async function describeColumns(orm: Orm, kind: DatabaseKind): Promise<ColumnMap> {
  const conn = orm.em.fork().getConnection();
  const result: ColumnMap = {};
  if (kind === 'postgres') {
    const rows = (await conn.execute(
      `select table_name, column_name, is_nullable from information_schema.columns where table_schema = current_schema() order by table_name, column_name`,
    )) as { table_name: string; column_name: string; is_nullable: string }[];
    for (const r of rows) {
      result[r.table_name] ??= {};
      result[r.table_name][r.column_name] = r.is_nullable === 'YES' ? 'nullable' : 'not null';
    }
    return result;
  }
  const tables = (await conn.execute(
    `select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name`,
  )) as { name: string }[];
  for (const { name } of tables) {
    const cols = (await conn.execute(`pragma table_info(\`${name}\`)`)) as {
      name: string;
      notnull: number;
      pk: number;
    }[];
    result[name] ??= {};
    for (const c of cols) result[name][c.name] = c.notnull || c.pk ? 'not null' : 'nullable';
  }
  return result;
}
