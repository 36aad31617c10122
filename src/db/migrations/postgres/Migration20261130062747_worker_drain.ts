import { Migration } from '@mikro-orm/migrations';

export class Migration20261130062747_worker_drain extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table "workers" add column "drain_requested_at" timestamptz(3) null;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "workers" drop column "drain_requested_at";`);
  }
}
