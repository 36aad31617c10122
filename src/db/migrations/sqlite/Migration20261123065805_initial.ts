import { Migration } from '@mikro-orm/migrations';

export class Migration20261123065805_initial extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table \`audit_entries\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`tenant_id\` text null, \`actor\` text not null, \`action\` text not null, \`target_id\` text null, \`outcome\` text not null, primary key (\`id\`));`,
    );
    this.addSql(`create index \`audit_entries_tenant_index\` on \`audit_entries\` (\`tenant_id\`, \`id\`);`);

    this.addSql(
      `create table \`events\` (\`id\` integer not null primary key autoincrement, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`type\` text not null, \`tenant_id\` text null, \`sandbox_id\` text null, \`worker_id\` text null, \`message_id\` text null, \`lease_id\` text null, \`data\` json not null);`,
    );
    this.addSql(`create index \`events_tenant_index\` on \`events\` (\`tenant_id\`, \`id\`);`);
    this.addSql(`create index \`events_sandbox_index\` on \`events\` (\`sandbox_id\`, \`id\`);`);
    this.addSql(`create index \`events_worker_index\` on \`events\` (\`worker_id\`, \`id\`);`);
    this.addSql(`create index \`events_created_at_index\` on \`events\` (\`created_at\`);`);

    this.addSql(
      `create table \`signing_keys\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`alg\` text not null, \`public_jwk\` json not null, \`private_jwk\` json not null, \`retired_at\` datetime null, primary key (\`id\`));`,
    );

    this.addSql(
      `create table \`tenants\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`slug\` text not null, \`name\` text not null, \`quota\` json not null, \`policy\` json not null, primary key (\`id\`));`,
    );
    this.addSql(`create unique index \`tenants_slug_unique\` on \`tenants\` (\`slug\`);`);

    this.addSql(
      `create table \`members\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`tenant_id\` text not null, \`subject\` text not null, \`role\` text not null, constraint \`members_tenant_id_foreign\` foreign key(\`tenant_id\`) references \`tenants\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`members_tenant_id_index\` on \`members\` (\`tenant_id\`);`);
    this.addSql(`create index \`members_subject_index\` on \`members\` (\`subject\`);`);
    this.addSql(`create unique index \`members_tenant_subject_unique\` on \`members\` (\`tenant_id\`, \`subject\`);`);

    this.addSql(
      `create table \`api_tokens\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`kind\` text not null, \`subject\` text not null, \`tenant_id\` text null, \`role\` text null, \`worker_id\` text null, \`scopes\` json not null, \`expires_at\` datetime null, \`last_used_at\` datetime null, \`revoked_at\` datetime null, constraint \`api_tokens_tenant_id_foreign\` foreign key(\`tenant_id\`) references \`tenants\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`api_tokens_tenant_id_index\` on \`api_tokens\` (\`tenant_id\`);`);
    this.addSql(`create index \`api_tokens_kind_index\` on \`api_tokens\` (\`kind\`);`);

    this.addSql(
      `create table \`workers\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`name\` text not null, \`tenant_id\` text null, \`status\` text not null default 'ONLINE', \`region\` text null, \`labels\` json not null, \`capacity_cpu_millis\` integer not null, \`capacity_memory_mb\` integer not null, \`allocated_cpu_millis\` integer not null default 0, \`allocated_memory_mb\` integer not null default 0, \`last_heartbeat_at\` datetime null, \`version\` text null, \`observed\` json null, \`token_id\` text null, \`deleted_at\` datetime null, constraint \`workers_tenant_id_foreign\` foreign key(\`tenant_id\`) references \`tenants\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create unique index \`workers_name_unique\` on \`workers\` (\`name\`);`);
    this.addSql(`create index \`workers_tenant_id_index\` on \`workers\` (\`tenant_id\`);`);

    this.addSql(
      `create table \`sandboxes\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`tenant_id\` text not null, \`worker_id\` text null, \`name\` text not null, \`image\` text not null, \`command\` json not null, \`cpu_millis\` integer not null, \`memory_mb\` integer not null, \`labels\` json not null, \`status\` text not null default 'PENDING', \`status_reason\` text null, \`state_version\` integer not null default 0, \`agent_phase\` text null, \`agent_activity\` text null, \`agent_updated_at\` datetime null, \`exit_code\` integer null, \`ttl_seconds\` integer null, \`started_at\` datetime null, \`stopped_at\` datetime null, \`expires_at\` datetime null, \`deleted_at\` datetime null, constraint \`sandboxes_tenant_id_foreign\` foreign key(\`tenant_id\`) references \`tenants\`(\`id\`) on delete cascade on update cascade, constraint \`sandboxes_worker_id_foreign\` foreign key(\`worker_id\`) references \`workers\`(\`id\`) on delete set null on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`sandboxes_tenant_id_index\` on \`sandboxes\` (\`tenant_id\`);`);
    this.addSql(`create index \`sandboxes_tenant_status_index\` on \`sandboxes\` (\`tenant_id\`, \`status\`);`);
    this.addSql(`create index \`sandboxes_worker_index\` on \`sandboxes\` (\`worker_id\`);`);

    this.addSql(
      `create table \`messages\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`sandbox_id\` text not null, \`tenant_id\` text not null, \`thread_id\` text not null default 'main', \`channel\` text not null default 'api', \`sender_kind\` text not null, \`sender_id\` text not null, \`body\` text not null, \`read_at\` datetime null, constraint \`messages_sandbox_id_foreign\` foreign key(\`sandbox_id\`) references \`sandboxes\`(\`id\`) on delete cascade on update cascade, constraint \`messages_tenant_id_foreign\` foreign key(\`tenant_id\`) references \`tenants\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`messages_sandbox_id_index\` on \`messages\` (\`sandbox_id\`);`);
    this.addSql(`create index \`messages_tenant_id_index\` on \`messages\` (\`tenant_id\`);`);
    this.addSql(
      `create index \`messages_sandbox_thread_index\` on \`messages\` (\`sandbox_id\`, \`thread_id\`, \`id\`);`,
    );

    this.addSql(
      `create table \`leases\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`sandbox_id\` text not null, \`holder_id\` text not null, \`fencing_token\` bigint not null, \`acquired_at\` datetime not null, \`renewed_at\` datetime not null, \`expires_at\` datetime not null, \`transitions\` integer not null default 0, constraint \`leases_sandbox_id_foreign\` foreign key(\`sandbox_id\`) references \`sandboxes\`(\`id\`) on delete cascade on update cascade, constraint \`leases_holder_id_foreign\` foreign key(\`holder_id\`) references \`workers\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create unique index \`leases_sandbox_unique\` on \`leases\` (\`sandbox_id\`);`);
    this.addSql(`create index \`leases_holder_id_index\` on \`leases\` (\`holder_id\`);`);
  }
}
