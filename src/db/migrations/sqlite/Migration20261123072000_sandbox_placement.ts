import { Migration } from '@mikro-orm/migrations';

export class Migration20261123072000_sandbox_placement extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table \`sandboxes\` add column \`placement\` json null;`);
  }
}
