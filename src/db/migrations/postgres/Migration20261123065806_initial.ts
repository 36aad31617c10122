import { Migration } from '@mikro-orm/migrations';

export class Migration20261123065806_initial extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table "audit_entries" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "tenant_id" uuid null, "actor" varchar(300) not null, "action" varchar(100) not null, "target_id" varchar(300) null, "outcome" varchar(100) not null, constraint "audit_entries_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "audit_entries_tenant_index" on "audit_entries" ("tenant_id", "id");`);

    this.addSql(
      `create table "events" ("id" bigserial primary key, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "type" varchar(40) not null, "tenant_id" uuid null, "sandbox_id" uuid null, "worker_id" uuid null, "message_id" uuid null, "lease_id" uuid null, "data" jsonb not null);`,
    );
    this.addSql(`create index "events_tenant_index" on "events" ("tenant_id", "id");`);
    this.addSql(`create index "events_sandbox_index" on "events" ("sandbox_id", "id");`);
    this.addSql(`create index "events_worker_index" on "events" ("worker_id", "id");`);
    this.addSql(`create index "events_created_at_index" on "events" ("created_at");`);

    this.addSql(
      `create table "signing_keys" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "alg" varchar(20) not null, "public_jwk" jsonb not null, "private_jwk" jsonb not null, "retired_at" timestamptz(3) null, constraint "signing_keys_pkey" primary key ("id"));`,
    );

    this.addSql(
      `create table "tenants" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "slug" varchar(40) not null, "name" varchar(200) not null, "quota" jsonb not null, "policy" jsonb not null, constraint "tenants_pkey" primary key ("id"));`,
    );
    this.addSql(`alter table "tenants" add constraint "tenants_slug_unique" unique ("slug");`);

    this.addSql(
      `create table "members" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "tenant_id" uuid not null, "subject" varchar(300) not null, "role" varchar(20) not null, constraint "members_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "members_subject_index" on "members" ("subject");`);
    this.addSql(
      `alter table "members" add constraint "members_tenant_subject_unique" unique ("tenant_id", "subject");`,
    );

    this.addSql(
      `create table "api_tokens" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "kind" varchar(20) not null, "subject" varchar(300) not null, "tenant_id" uuid null, "role" varchar(20) null, "worker_id" uuid null, "scopes" jsonb not null, "expires_at" timestamptz(3) null, "last_used_at" timestamptz(3) null, "revoked_at" timestamptz(3) null, constraint "api_tokens_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "api_tokens_kind_index" on "api_tokens" ("kind");`);

    this.addSql(
      `create table "workers" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "name" varchar(200) not null, "tenant_id" uuid null, "status" varchar(20) not null default 'ONLINE', "region" varchar(100) null, "labels" jsonb not null, "capacity_cpu_millis" int not null, "capacity_memory_mb" int not null, "allocated_cpu_millis" int not null default 0, "allocated_memory_mb" int not null default 0, "last_heartbeat_at" timestamptz(3) null, "version" varchar(100) null, "observed" jsonb null, "token_id" varchar(64) null, "deleted_at" timestamptz(3) null, constraint "workers_pkey" primary key ("id"));`,
    );
    this.addSql(`alter table "workers" add constraint "workers_name_unique" unique ("name");`);

    this.addSql(
      `create table "sandboxes" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "tenant_id" uuid not null, "worker_id" uuid null, "name" varchar(200) not null, "image" varchar(500) not null, "command" jsonb not null, "cpu_millis" int not null, "memory_mb" int not null, "labels" jsonb not null, "status" varchar(20) not null default 'PENDING', "status_reason" text null, "state_version" int not null default 0, "agent_phase" varchar(30) null, "agent_activity" text null, "agent_updated_at" timestamptz(3) null, "exit_code" int null, "ttl_seconds" int null, "started_at" timestamptz(3) null, "stopped_at" timestamptz(3) null, "expires_at" timestamptz(3) null, "deleted_at" timestamptz(3) null, constraint "sandboxes_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "sandboxes_tenant_status_index" on "sandboxes" ("tenant_id", "status");`);
    this.addSql(`create index "sandboxes_worker_index" on "sandboxes" ("worker_id");`);

    this.addSql(
      `create table "messages" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "sandbox_id" uuid not null, "tenant_id" uuid not null, "thread_id" varchar(200) not null default 'main', "channel" varchar(50) not null default 'api', "sender_kind" varchar(20) not null, "sender_id" varchar(300) not null, "body" text not null, "read_at" timestamptz(3) null, constraint "messages_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "messages_sandbox_thread_index" on "messages" ("sandbox_id", "thread_id", "id");`);

    this.addSql(
      `create table "leases" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "sandbox_id" uuid not null, "holder_id" uuid not null, "fencing_token" bigint not null, "acquired_at" timestamptz(3) not null, "renewed_at" timestamptz(3) not null, "expires_at" timestamptz(3) not null, "transitions" int not null default 0, constraint "leases_pkey" primary key ("id"));`,
    );
    this.addSql(`alter table "leases" add constraint "leases_sandbox_unique" unique ("sandbox_id");`);

    this.addSql(
      `alter table "members" add constraint "members_tenant_id_foreign" foreign key ("tenant_id") references "tenants" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(
      `alter table "api_tokens" add constraint "api_tokens_tenant_id_foreign" foreign key ("tenant_id") references "tenants" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(
      `alter table "workers" add constraint "workers_tenant_id_foreign" foreign key ("tenant_id") references "tenants" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(
      `alter table "sandboxes" add constraint "sandboxes_tenant_id_foreign" foreign key ("tenant_id") references "tenants" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "sandboxes" add constraint "sandboxes_worker_id_foreign" foreign key ("worker_id") references "workers" ("id") on update cascade on delete set null;`,
    );

    this.addSql(
      `alter table "messages" add constraint "messages_sandbox_id_foreign" foreign key ("sandbox_id") references "sandboxes" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "messages" add constraint "messages_tenant_id_foreign" foreign key ("tenant_id") references "tenants" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(
      `alter table "leases" add constraint "leases_sandbox_id_foreign" foreign key ("sandbox_id") references "sandboxes" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "leases" add constraint "leases_holder_id_foreign" foreign key ("holder_id") references "workers" ("id") on update cascade on delete cascade;`,
    );
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "members" drop constraint "members_tenant_id_foreign";`);

    this.addSql(`alter table "api_tokens" drop constraint "api_tokens_tenant_id_foreign";`);

    this.addSql(`alter table "workers" drop constraint "workers_tenant_id_foreign";`);

    this.addSql(`alter table "sandboxes" drop constraint "sandboxes_tenant_id_foreign";`);

    this.addSql(`alter table "messages" drop constraint "messages_tenant_id_foreign";`);

    this.addSql(`alter table "sandboxes" drop constraint "sandboxes_worker_id_foreign";`);

    this.addSql(`alter table "leases" drop constraint "leases_holder_id_foreign";`);

    this.addSql(`alter table "messages" drop constraint "messages_sandbox_id_foreign";`);

    this.addSql(`alter table "leases" drop constraint "leases_sandbox_id_foreign";`);

    this.addSql(`drop table if exists "audit_entries" cascade;`);

    this.addSql(`drop table if exists "events" cascade;`);

    this.addSql(`drop table if exists "signing_keys" cascade;`);

    this.addSql(`drop table if exists "tenants" cascade;`);

    this.addSql(`drop table if exists "members" cascade;`);

    this.addSql(`drop table if exists "api_tokens" cascade;`);

    this.addSql(`drop table if exists "workers" cascade;`);

    this.addSql(`drop table if exists "sandboxes" cascade;`);

    this.addSql(`drop table if exists "messages" cascade;`);

    this.addSql(`drop table if exists "leases" cascade;`);
  }
}
