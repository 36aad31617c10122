import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095247_message_delivery extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table "sandboxes" add column "stdin_framing" varchar(20) not null default 'PLAIN';`);

    this.addSql(
      `alter table "messages" add column "delivery_state" varchar(20) null, add column "delivery_error" text null, add column "dispatched_at" timestamptz(3) null, add column "delivered_at" timestamptz(3) null;`,
    );
    this.addSql(`create index "messages_delivery_state_index" on "messages" ("delivery_state", "dispatched_at");`);
    this.addSql(
      `create index "messages_sandbox_delivery_index" on "messages" ("sandbox_id", "delivery_state", "event_tx_id", "event_id");`,
    );
    // Messages written before delivery was tracked were relayed (or were history): never deliver them again.
    this.addSql(`update "messages" set "delivery_state" = 'DELIVERED' where "sender_kind" in ('USER', 'SYSTEM');`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop index "messages_delivery_state_index";`);
    this.addSql(`drop index "messages_sandbox_delivery_index";`);
    this.addSql(
      `alter table "messages" drop column "delivery_state", drop column "delivery_error", drop column "dispatched_at", drop column "delivered_at";`,
    );
    this.addSql(`alter table "sandboxes" drop column "stdin_framing";`);
  }
}
