import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095319_channels extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table "channels" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "tenant_id" uuid not null, "name" varchar(50) not null, "outbound_url" varchar(2000) not null, "secret" text not null, constraint "channels_pkey" primary key ("id"));`,
    );
    this.addSql(`alter table "channels" add constraint "channels_tenant_name_unique" unique ("tenant_id", "name");`);

    this.addSql(
      `create table "channel_nonces" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "channel_id" uuid not null, "nonce" varchar(200) not null, "expires_at" timestamptz(3) not null, constraint "channel_nonces_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "channel_nonces_expiry_index" on "channel_nonces" ("channel_id", "expires_at");`);
    this.addSql(
      `alter table "channel_nonces" add constraint "channel_nonces_channel_nonce_unique" unique ("channel_id", "nonce");`,
    );

    this.addSql(
      `create table "channel_deliveries" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "channel_id" uuid not null, "message_id" uuid not null, "thread_id" varchar(200) not null, "payload" text not null, "status" varchar(20) not null default 'PENDING', "attempt_count" int not null default 0, "next_attempt_at" timestamptz(3) not null, "completed_at" timestamptz(3) null, "attempts" jsonb not null, "event_tx_id" bigint not null, "event_id" bigint not null, constraint "channel_deliveries_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "channel_deliveries_due_index" on "channel_deliveries" ("status", "next_attempt_at");`);
    this.addSql(
      `create index "channel_deliveries_thread_index" on "channel_deliveries" ("channel_id", "thread_id", "event_tx_id", "event_id");`,
    );

    this.addSql(
      `create table "channel_threads" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "channel_id" uuid not null, "sandbox_id" uuid not null, "thread_id" varchar(200) not null, constraint "channel_threads_pkey" primary key ("id"));`,
    );
    this.addSql(
      `create index "channel_threads_channel_thread_index" on "channel_threads" ("channel_id", "thread_id");`,
    );
    this.addSql(
      `alter table "channel_threads" add constraint "channel_threads_sandbox_thread_unique" unique ("sandbox_id", "thread_id");`,
    );

    this.addSql(
      `alter table "channels" add constraint "channels_tenant_id_foreign" foreign key ("tenant_id") references "tenants" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(
      `alter table "channel_nonces" add constraint "channel_nonces_channel_id_foreign" foreign key ("channel_id") references "channels" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(
      `alter table "channel_deliveries" add constraint "channel_deliveries_channel_id_foreign" foreign key ("channel_id") references "channels" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "channel_deliveries" add constraint "channel_deliveries_message_id_foreign" foreign key ("message_id") references "messages" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(
      `alter table "channel_threads" add constraint "channel_threads_channel_id_foreign" foreign key ("channel_id") references "channels" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "channel_threads" add constraint "channel_threads_sandbox_id_foreign" foreign key ("sandbox_id") references "sandboxes" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(`alter table "sandboxes" add column "channel_bound" boolean not null default false;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "sandboxes" drop column "channel_bound";`);

    this.addSql(`alter table "channel_nonces" drop constraint "channel_nonces_channel_id_foreign";`);

    this.addSql(`alter table "channel_deliveries" drop constraint "channel_deliveries_channel_id_foreign";`);

    this.addSql(`alter table "channel_threads" drop constraint "channel_threads_channel_id_foreign";`);

    this.addSql(`drop table if exists "channels" cascade;`);

    this.addSql(`drop table if exists "channel_nonces" cascade;`);

    this.addSql(`drop table if exists "channel_deliveries" cascade;`);

    this.addSql(`drop table if exists "channel_threads" cascade;`);
  }
}
