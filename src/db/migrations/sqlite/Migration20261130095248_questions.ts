import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095248_questions extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `create table \`questions\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`sandbox_id\` text not null, \`tenant_id\` text not null, \`message_id\` text not null, \`prompt\` text not null, \`options\` json not null, \`allow_free_text\` integer not null default false, \`status\` text not null default 'OPEN', \`answer_message_id\` text null, \`answered_by\` text null, \`answered_at\` datetime null, \`answer_choice\` text null, \`answer_text\` text null, constraint \`questions_sandbox_id_foreign\` foreign key(\`sandbox_id\`) references \`sandboxes\`(\`id\`) on delete cascade on update cascade, constraint \`questions_tenant_id_foreign\` foreign key(\`tenant_id\`) references \`tenants\`(\`id\`) on delete cascade on update cascade, constraint \`questions_message_id_foreign\` foreign key(\`message_id\`) references \`messages\`(\`id\`) on delete cascade on update cascade, constraint \`questions_answer_message_id_foreign\` foreign key(\`answer_message_id\`) references \`messages\`(\`id\`) on delete set null on update cascade, primary key (\`id\`));`,
    );
    this.addSql(`create index \`questions_sandbox_id_index\` on \`questions\` (\`sandbox_id\`);`);
    this.addSql(`create index \`questions_tenant_id_index\` on \`questions\` (\`tenant_id\`);`);
    this.addSql(`create index \`questions_message_id_index\` on \`questions\` (\`message_id\`);`);
    this.addSql(`create index \`questions_answer_message_id_index\` on \`questions\` (\`answer_message_id\`);`);
    this.addSql(`create index \`questions_sandbox_status_index\` on \`questions\` (\`sandbox_id\`, \`status\`);`);

    this.addSql(`alter table \`messages\` add column \`kind\` text not null default 'MESSAGE';`);
    this.addSql(`alter table \`messages\` add column \`question_id\` text null;`);
  }
}
