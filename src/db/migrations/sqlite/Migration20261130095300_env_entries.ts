import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095300_env_entries extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table \`env_entries\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`tenant_id\` text not null, \`sandbox_id\` text null, \`scope_id\` text not null, \`name\` text not null, \`secret\` integer not null, \`value\` text null, \`ciphertext\` text null, \`key_id\` text null, constraint \`env_entries_tenant_id_foreign\` foreign key(\`tenant_id\`) references \`tenants\`(\`id\`) on delete cascade on update cascade, constraint \`env_entries_sandbox_id_foreign\` foreign key(\`sandbox_id\`) references \`sandboxes\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`env_entries_sandbox_id_index\` on \`env_entries\` (\`sandbox_id\`);`);
    this.addSql(`create index \`env_entries_tenant_index\` on \`env_entries\` (\`tenant_id\`);`);
    this.addSql(`create index \`env_entries_key_index\` on \`env_entries\` (\`key_id\`);`);
    this.addSql(`create unique index \`env_entries_scope_name_unique\` on \`env_entries\` (\`scope_id\`, \`name\`);`);
  }
}
