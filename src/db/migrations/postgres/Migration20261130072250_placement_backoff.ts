import { Migration } from '@mikro-orm/migrations';

export class Migration20261130072250_placement_backoff extends Migration {
  override async up(): Promise<void> {
    this.addSql(`create index "audit_entries_created_at_index" on "audit_entries" ("created_at");`);
    this.addSql(
      `alter table "sandboxes" add column "next_placement_at" timestamptz(3) null, add column "placement_attempts" int not null default 0;`,
    );
    this.addSql(`create index "sandboxes_next_placement_index" on "sandboxes" ("next_placement_at");`);
    // Sandboxes already waiting are due for a retry at once.
    this.addSql(`update "sandboxes" set "next_placement_at" = "created_at" where "status" in ('PENDING', 'LOST');`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop index "audit_entries_created_at_index";`);
    this.addSql(`drop index "sandboxes_next_placement_index";`);
    this.addSql(`alter table "sandboxes" drop column "next_placement_at", drop column "placement_attempts";`);
  }
}
