import { Migration } from '@mikro-orm/migrations';

export class Migration20261130111800_channel_secret_key extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table "channels" add column "secret_key_id" varchar(64) null;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "channels" drop column "secret_key_id";`);
  }
}
