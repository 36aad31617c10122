import { Migration } from '@mikro-orm/migrations';

/** Added columns only (other changes add columns to the same tables): never rebuild a table here. */
export class Migration20261130095247_message_delivery extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table \`sandboxes\` add column \`stdin_framing\` text not null default 'PLAIN';`);

    this.addSql(`alter table \`messages\` add column \`delivery_state\` text null;`);
    this.addSql(`alter table \`messages\` add column \`delivery_error\` text null;`);
    this.addSql(`alter table \`messages\` add column \`dispatched_at\` datetime null;`);
    this.addSql(`alter table \`messages\` add column \`delivered_at\` datetime null;`);
    this.addSql(
      `create index \`messages_delivery_state_index\` on \`messages\` (\`delivery_state\`, \`dispatched_at\`);`,
    );
    this.addSql(
      `create index \`messages_sandbox_delivery_index\` on \`messages\` (\`sandbox_id\`, \`delivery_state\`, \`event_tx_id\`, \`event_id\`);`,
    );
    // Messages written before delivery was tracked were relayed (or were history): never deliver them again.
    this.addSql(
      `update \`messages\` set \`delivery_state\` = 'DELIVERED' where \`sender_kind\` in ('USER', 'SYSTEM');`,
    );
  }
}
