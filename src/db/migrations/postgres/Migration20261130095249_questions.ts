import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095249_questions extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table "questions" ("id" uuid not null, "created_at" timestamptz(3) not null, "updated_at" timestamptz(3) not null, "sandbox_id" uuid not null, "tenant_id" uuid not null, "message_id" uuid not null, "prompt" text not null, "options" jsonb not null, "allow_free_text" boolean not null default false, "status" varchar(20) not null default 'OPEN', "answer_message_id" uuid null, "answered_by" varchar(300) null, "answered_at" timestamptz(3) null, "answer_choice" varchar(200) null, "answer_text" text null, constraint "questions_pkey" primary key ("id"));`,
    );
    this.addSql(`create index "questions_sandbox_status_index" on "questions" ("sandbox_id", "status");`);

    this.addSql(
      `alter table "questions" add constraint "questions_sandbox_id_foreign" foreign key ("sandbox_id") references "sandboxes" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "questions" add constraint "questions_tenant_id_foreign" foreign key ("tenant_id") references "tenants" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "questions" add constraint "questions_message_id_foreign" foreign key ("message_id") references "messages" ("id") on update cascade on delete cascade;`,
    );
    this.addSql(
      `alter table "questions" add constraint "questions_answer_message_id_foreign" foreign key ("answer_message_id") references "messages" ("id") on update cascade on delete set null;`,
    );

    this.addSql(
      `alter table "messages" add column "kind" varchar(20) not null default 'MESSAGE', add column "question_id" uuid null;`,
    );
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "questions" cascade;`);

    this.addSql(`alter table "messages" drop column "kind", drop column "question_id";`);
  }
}
