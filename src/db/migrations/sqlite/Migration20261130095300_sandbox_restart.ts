import { Migration } from '@mikro-orm/migrations';

export class Migration20261130095300_sandbox_restart extends Migration {
  override async up(): Promise<void> {
    this.addSql('alter table `sandboxes` add column `restart_requested_at` datetime null;');
  }
}
