import { Migration } from '@mikro-orm/migrations';

/**
 * The event log's position becomes (transaction id, event id), as on Postgres. SQLite has one
 * writer, so the transaction id stays 0 and ids alone keep commit order. Messages carry the
 * position of their MESSAGE_POSTED event; the sweeper's pruned-through mark gets its row.
 */
export class Migration20261130072126_commit_ordered_log extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      'create table `event_log_state` (`id` integer not null default 1, `pruned_tx_id` bigint not null default 0, `pruned_id` bigint not null default 0, primary key (`id`));',
    );
    // Ids below the oldest remaining event were pruned (or burned): the old rule, now written down once.
    this.addSql(
      "insert into `event_log_state` (`id`, `pruned_tx_id`, `pruned_id`) select 1, 0, coalesce((select min(`id`) - 1 from `events`), (select `seq` from `sqlite_sequence` where `name` = 'events'), 0);",
    );

    this.addSql('drop index `events_worker_index`;');
    this.addSql('drop index `events_sandbox_index`;');
    this.addSql('drop index `events_tenant_index`;');
    this.addSql('alter table `events` add column `tx_id` bigint not null default 0;');
    this.addSql('create index `events_position_index` on `events` (`tx_id`, `id`);');
    this.addSql('create index `events_worker_index` on `events` (`worker_id`, `tx_id`, `id`);');
    this.addSql('create index `events_sandbox_index` on `events` (`sandbox_id`, `tx_id`, `id`);');
    this.addSql('create index `events_tenant_index` on `events` (`tenant_id`, `tx_id`, `id`);');

    this.addSql('drop index `messages_sandbox_thread_index`;');
    this.addSql('alter table `messages` add column `event_tx_id` bigint not null default 0;');
    this.addSql('alter table `messages` add column `event_id` bigint not null default 0;');
    this.addSql(
      "update `messages` set `event_id` = coalesce((select max(e.`id`) from `events` e where e.`message_id` = `messages`.`id` and e.`type` = 'MESSAGE_POSTED'), 0);",
    );
    // Messages whose event was pruned: pruned ids lie below every remaining one, and there were at
    // least as many of them, so numbering these 1, 2, … in id order keeps them first and distinct.
    this.addSql(
      'update `messages` set `event_id` = r.`n` from (select `id`, row_number() over (order by `id`) as `n` from `messages` where `event_id` = 0) as r where `messages`.`id` = r.`id`;',
    );
    this.addSql(
      'create index `messages_sandbox_position_index` on `messages` (`sandbox_id`, `event_tx_id`, `event_id`);',
    );
    this.addSql(
      'create index `messages_sandbox_thread_index` on `messages` (`sandbox_id`, `thread_id`, `event_tx_id`, `event_id`);',
    );
  }
}
