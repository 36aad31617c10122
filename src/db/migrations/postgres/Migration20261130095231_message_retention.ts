import { Migration } from '@mikro-orm/migrations';

/** Message retention per tenant (null: kept forever) and the position pruned through so far. */
export class Migration20261130095231_message_retention extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      'alter table "tenants" add column "message_retention_days" int null, add column "messages_pruned_tx_id" bigint not null default 0, add column "messages_pruned_id" bigint not null default 0;',
    );
    this.addSql('create index "messages_tenant_created_index" on "messages" ("tenant_id", "created_at");');
  }

  override async down(): Promise<void> {
    this.addSql('drop index "messages_tenant_created_index";');
    this.addSql(
      'alter table "tenants" drop column "message_retention_days", drop column "messages_pruned_tx_id", drop column "messages_pruned_id";',
    );
  }
}
