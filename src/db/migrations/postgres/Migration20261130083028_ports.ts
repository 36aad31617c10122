import { Migration } from '@mikro-orm/migrations';

export class Migration20261130083028_ports extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table "port_allocations" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "sandbox_id" uuid not null, "worker_id" uuid not null, "name" varchar(4) not null, "port" int not null, "url" varchar(600) null, constraint "port_allocations_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "port_allocations_sandbox_index" on "port_allocations" ("sandbox_id");`);
    this.addSql(
      `alter table "port_allocations" add constraint "port_allocations_worker_port_unique" unique ("worker_id", "port");`,
    );

    this.addSql(
      `alter table "port_allocations" add constraint "port_allocations_sandbox_id_foreign" foreign key ("sandbox_id") references "sandboxes" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "port_allocations" add constraint "port_allocations_worker_id_foreign" foreign key ("worker_id") references "workers" ("id") on update cascade on delete cascade;`,
    );

    this.addSql(
      `alter table "workers" add column "ports_from" int null, add column "ports_to" int null, add column "public_base_url" varchar(500) null, add column "allocated_ports" int not null default 0;`,
    );

    this.addSql(`alter table "sandboxes" add column "ports" int not null default 0;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "port_allocations" cascade;`);

    this.addSql(`alter table "sandboxes" drop column "ports";`);

    this.addSql(
      `alter table "workers" drop column "ports_from", drop column "ports_to", drop column "public_base_url", drop column "allocated_ports";`,
    );
  }
}
