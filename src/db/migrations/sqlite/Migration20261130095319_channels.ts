import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095319_channels extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table \`channels\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`tenant_id\` text not null, \`name\` text not null, \`outbound_url\` text not null, \`secret\` text not null, constraint \`channels_tenant_id_foreign\` foreign key(\`tenant_id\`) references \`tenants\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`channels_tenant_id_index\` on \`channels\` (\`tenant_id\`);`);
    this.addSql(`create unique index \`channels_tenant_name_unique\` on \`channels\` (\`tenant_id\`, \`name\`);`);

    this.addSql(
      `create table \`channel_nonces\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`channel_id\` text not null, \`nonce\` text not null, \`expires_at\` datetime not null, constraint \`channel_nonces_channel_id_foreign\` foreign key(\`channel_id\`) references \`channels\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`channel_nonces_channel_id_index\` on \`channel_nonces\` (\`channel_id\`);`);
    this.addSql(`create index \`channel_nonces_expiry_index\` on \`channel_nonces\` (\`channel_id\`, \`expires_at\`);`);
    this.addSql(
      `create unique index \`channel_nonces_channel_nonce_unique\` on \`channel_nonces\` (\`channel_id\`, \`nonce\`);`,
    );

    this.addSql(
      `create table \`channel_deliveries\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`channel_id\` text not null, \`message_id\` text not null, \`thread_id\` text not null, \`payload\` text not null, \`status\` text not null default 'PENDING', \`attempt_count\` integer not null default 0, \`next_attempt_at\` datetime not null, \`completed_at\` datetime null, \`attempts\` json not null, \`event_tx_id\` bigint not null, \`event_id\` bigint not null, constraint \`channel_deliveries_channel_id_foreign\` foreign key(\`channel_id\`) references \`channels\`(\`id\`) on delete cascade on update cascade, constraint \`channel_deliveries_message_id_foreign\` foreign key(\`message_id\`) references \`messages\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`channel_deliveries_channel_id_index\` on \`channel_deliveries\` (\`channel_id\`);`);
    this.addSql(`create index \`channel_deliveries_message_id_index\` on \`channel_deliveries\` (\`message_id\`);`);
    this.addSql(
      `create index \`channel_deliveries_due_index\` on \`channel_deliveries\` (\`status\`, \`next_attempt_at\`);`,
    );
    this.addSql(
      `create index \`channel_deliveries_thread_index\` on \`channel_deliveries\` (\`channel_id\`, \`thread_id\`, \`event_tx_id\`, \`event_id\`);`,
    );

    this.addSql(
      `create table \`channel_threads\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`channel_id\` text not null, \`sandbox_id\` text not null, \`thread_id\` text not null, constraint \`channel_threads_channel_id_foreign\` foreign key(\`channel_id\`) references \`channels\`(\`id\`) on delete cascade on update cascade, constraint \`channel_threads_sandbox_id_foreign\` foreign key(\`sandbox_id\`) references \`sandboxes\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`channel_threads_channel_id_index\` on \`channel_threads\` (\`channel_id\`);`);
    this.addSql(`create index \`channel_threads_sandbox_id_index\` on \`channel_threads\` (\`sandbox_id\`);`);
    this.addSql(
      `create index \`channel_threads_channel_thread_index\` on \`channel_threads\` (\`channel_id\`, \`thread_id\`);`,
    );
    this.addSql(
      `create unique index \`channel_threads_sandbox_thread_unique\` on \`channel_threads\` (\`sandbox_id\`, \`thread_id\`);`,
    );

    this.addSql(`alter table \`sandboxes\` add column \`channel_bound\` integer not null default false;`);
  }
}
