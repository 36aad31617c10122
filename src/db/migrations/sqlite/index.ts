import type { Constructor } from '@mikro-orm/core';
import type { Migration } from '@mikro-orm/migrations';
import { Migration20261123065805_initial } from './Migration20261123065805_initial.js';
import { Migration20261123072000_sandbox_placement } from './Migration20261123072000_sandbox_placement.js';
import { Migration20261130062747_worker_drain } from './Migration20261130062747_worker_drain.js';
import { Migration20261130072126_commit_ordered_log } from './Migration20261130072126_commit_ordered_log.js';
import { Migration20261130072250_placement_backoff } from './Migration20261130072250_placement_backoff.js';
import { Migration20261130083028_ports } from './Migration20261130083028_ports.js';
import { Migration20261130095231_message_retention } from './Migration20261130095231_message_retention.js';
import { Migration20261130095247_message_delivery } from './Migration20261130095247_message_delivery.js';
import { Migration20261130095248_questions } from './Migration20261130095248_questions.js';
import { Migration20261130095300_env_entries } from './Migration20261130095300_env_entries.js';
import { Migration20261130095300_sandbox_restart } from './Migration20261130095300_sandbox_restart.js';
import { Migration20261130095319_channels } from './Migration20261130095319_channels.js';
import { Migration20261130111800_channel_secret_key } from './Migration20261130111800_channel_secret_key.js';

/** Applied in this order; `npm run migration:create` writes a new file, which is appended here. */
export const SQLITE_MIGRATIONS: { name: string; class: Constructor<Migration> }[] = [
  { name: 'Migration20261123065805_initial', class: Migration20261123065805_initial },
  { name: 'Migration20261123072000_sandbox_placement', class: Migration20261123072000_sandbox_placement },
  { name: 'Migration20261130062747_worker_drain', class: Migration20261130062747_worker_drain },
  { name: 'Migration20261130072126_commit_ordered_log', class: Migration20261130072126_commit_ordered_log },
  { name: 'Migration20261130072250_placement_backoff', class: Migration20261130072250_placement_backoff },
  { name: 'Migration20261130083028_ports', class: Migration20261130083028_ports },
  { name: 'Migration20261130095231_message_retention', class: Migration20261130095231_message_retention },
  { name: 'Migration20261130095247_message_delivery', class: Migration20261130095247_message_delivery },
  { name: 'Migration20261130095248_questions', class: Migration20261130095248_questions },
  { name: 'Migration20261130095300_env_entries', class: Migration20261130095300_env_entries },
  { name: 'Migration20261130095300_sandbox_restart', class: Migration20261130095300_sandbox_restart },
  { name: 'Migration20261130095319_channels', class: Migration20261130095319_channels },
  { name: 'Migration20261130111800_channel_secret_key', class: Migration20261130111800_channel_secret_key },
];
