import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095300_env_entries extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table "env_entries" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "tenant_id" uuid not null, "sandbox_id" uuid null, "scope_id" uuid not null, "name" varchar(128) not null, "secret" boolean not null, "value" text null, "ciphertext" text null, "key_id" varchar(64) null, constraint "env_entries_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "env_entries_tenant_index" on "env_entries" ("tenant_id");`);
    this.addSql(`create index "env_entries_key_index" on "env_entries" ("key_id");`);
    this.addSql(
      `alter table "env_entries" add constraint "env_entries_scope_name_unique" unique ("scope_id", "name");`,
    );

    this.addSql(
      `alter table "env_entries" add constraint "env_entries_tenant_id_foreign" foreign key ("tenant_id") references "tenants" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "env_entries" add constraint "env_entries_sandbox_id_foreign" foreign key ("sandbox_id") references "sandboxes" ("id") on update cascade on delete cascade;`,
    );
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "env_entries" cascade;`);
  }
}
