import { describe, expect, it } from 'vitest';
import { type ColumnClass, columnClassOf, portableRow, TableChecksum } from '../../src/ops/store-tables.js';

/** The per-table checksum that backup, restore and migrate-store compare (src/ops/store-tables.ts). */
describe('store table checksums', () => {
  const columns = new Map<string, ColumnClass>([
    ['id', columnClassOf('bigint')],
    ['created_at', columnClassOf('datetime')],
    ['data', columnClassOf('json')],
    ['tx_id', columnClassOf('bigint')],
    ['body', columnClassOf('text')],
  ]);
  // The same row as each driver returns it: SQLite (epoch ms, JSON text, numbers), Postgres (Date, parsed jsonb with
  // its own key order, 64-bit integers as strings).
  const sqliteRow = { id: 7, created_at: 1796032417753, data: '{"b":1,"a":[1,{"d":2,"c":3}]}', tx_id: 0, body: 'hi' };
  const postgresRow = {
    id: '7',
    created_at: new Date(1796032417753),
    data: { a: [1, { c: 3, d: 2 }], b: 1 },
    tx_id: '0',
    body: 'hi',
  };

  it('is the same for the same rows on SQLite and Postgres, in any order', () => {
    const other = { ...postgresRow, id: '8', body: 'there' };
    const a = new TableChecksum();
    a.add(portableRow(sqliteRow, columns));
    a.add(portableRow({ ...sqliteRow, id: 8, body: 'there' }, columns));
    const b = new TableChecksum();
    b.add(portableRow(other, columns));
    b.add(portableRow(postgresRow, columns));
    expect(a.rows).toBe(2);
    expect(b.hex).toBe(a.hex);
  });

  it('changes with any changed, missing or extra row', () => {
    const sumOf = (rows: Record<string, unknown>[]) => {
      const sum = new TableChecksum();
      for (const row of rows) sum.add(portableRow(row, columns));
      return sum.hex;
    };
    const base = sumOf([sqliteRow, { ...sqliteRow, id: 8 }]);
    expect(sumOf([sqliteRow, { ...sqliteRow, id: 8, body: 'hi!' }])).not.toBe(base);
    expect(sumOf([sqliteRow, { ...sqliteRow, id: 8, created_at: 1796032417754 }])).not.toBe(base);
    expect(sumOf([sqliteRow])).not.toBe(base);
    expect(sumOf([sqliteRow, { ...sqliteRow, id: 8 }, { ...sqliteRow, id: 9 }])).not.toBe(base);
  });

  it('keeps 64-bit integers exact', () => {
    const big = portableRow({ ...postgresRow, tx_id: '9223372036854775807' }, columns);
    expect(big.tx_id).toBe('9223372036854775807');
    expect(big.created_at).toBe(new Date(1796032417753).toISOString());
  });
});
