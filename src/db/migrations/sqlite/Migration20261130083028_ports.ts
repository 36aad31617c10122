import { Migration } from '@mikro-orm/migrations';

export class Migration20261130083028_ports extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table \`port_allocations\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`sandbox_id\` text not null, \`worker_id\` text not null, \`name\` text not null, \`port\` integer not null, \`url\` text null, constraint \`port_allocations_sandbox_id_foreign\` foreign key(\`sandbox_id\`) references \`sandboxes\`(\`id\`) on delete cascade on update cascade, constraint \`port_allocations_worker_id_foreign\` foreign key(\`worker_id\`) references \`workers\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`port_allocations_worker_id_index\` on \`port_allocations\` (\`worker_id\`);`);
    this.addSql(`create index \`port_allocations_sandbox_index\` on \`port_allocations\` (\`sandbox_id\`);`);
    this.addSql(
      `create unique index \`port_allocations_worker_port_unique\` on \`port_allocations\` (\`worker_id\`, \`port\`);`,
    );

    this.addSql(`alter table \`workers\` add column \`ports_from\` integer null;`);
    this.addSql(`alter table \`workers\` add column \`ports_to\` integer null;`);
    this.addSql(`alter table \`workers\` add column \`public_base_url\` text null;`);
    this.addSql(`alter table \`workers\` add column \`allocated_ports\` integer not null default 0;`);

    this.addSql(`alter table \`sandboxes\` add column \`ports\` integer not null default 0;`);
  }
}
