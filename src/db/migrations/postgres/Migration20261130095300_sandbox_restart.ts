import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095300_sandbox_restart extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table "sandboxes" add column "restart_requested_at" timestamptz(3) null;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "sandboxes" drop column "restart_requested_at";`);
  }
}
