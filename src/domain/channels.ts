import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { hasTenantRole } from '../auth/identity.js';
import type { SecretKeyring } from '../auth/secret-keys.js';
import { Channel, ChannelDelivery, ChannelNonce, ChannelThread } from '../db/entities/channel.js';
import { Tenant } from '../db/entities/tenant.js';
import { isUuid, newId } from '../db/ids.js';
import type { Em } from '../db/orm.js';
import { audited } from './audit.js';
import { newChannelSecret, openChannelSecret, sealChannelSecret } from './channel-signing.js';
import type { ServiceContext } from './context.js';
import { AlreadyExistsError, ForbiddenError, NotFoundError, ValidationError } from './errors.js';
import { SECRET_REENCRYPT_BATCH } from './input-limits.js';
import { runSql } from './locks.js';
import { keysetPage, type Page, type PageArgs } from './pagination.js';

/** A channel's name: what its messages' `channel` field says (the same alphabet as that field). */
export const CHANNEL_NAME_PATTERN = /^[a-z0-9_-]{1,50}$/;
export const CHANNEL_URL_MAX_LENGTH = 2000;

export interface CreateChannelInput {
  tenantId: string;
  name: string;
  outboundUrl: string;
}

/** A channel with its secret, as returned once by createChannel and rotateChannelSecret. */
export interface ChannelWithSecret {
  channel: Channel;
  secret: string;
}

function validateName(name: string): string {
  if (!CHANNEL_NAME_PATTERN.test(name))
    throw new ValidationError('name must be 1 to 50 characters of a-z, 0-9, "_" and "-"', 'input.name');
  return name;
}

function validateUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ValidationError('outboundUrl must be an absolute http or https URL', 'input.outboundUrl');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ValidationError('outboundUrl must be an http or https URL', 'input.outboundUrl');
  if (url.username || url.password)
    throw new ValidationError('outboundUrl must not carry credentials (the calls are signed)', 'input.outboundUrl');
  if (raw.length > CHANNEL_URL_MAX_LENGTH)
    throw new ValidationError(`outboundUrl must be at most ${CHANNEL_URL_MAX_LENGTH} characters`, 'input.outboundUrl');
  return url.toString();
}

/**
 * A tenant's chat channels: its ADMINs create, delete and re-key them; its OPERATORs see them and
 * their deliveries. The secret is returned only by the mutation that made it.
 */
export class ChannelService {
  constructor(private readonly ctx: ServiceContext) {}

  async create(input: CreateChannelInput): Promise<ChannelWithSecret> {
    return audited(
      this.ctx,
      'createChannel',
      { tenantId: isUuid(input.tenantId) ? input.tenantId : null },
      async (em) => {
        this.requireAdmin(input.tenantId);
        const name = validateName(input.name);
        const outboundUrl = validateUrl(input.outboundUrl);
        const tenant = await em.findOne(Tenant, { id: input.tenantId });
        if (!tenant) throw new NotFoundError('Tenant', input.tenantId);
        if (await em.count(Channel, { tenant: tenant.id, name })) throw new AlreadyExistsError('Channel', 'name', name);
        const secret = newChannelSecret();
        const id = newId();
        const channel = em.create(Channel, {
          id,
          tenant: tenant.id,
          name,
          outboundUrl,
          ...sealChannelSecret(this.ctx.secrets, id, secret),
          createdAt: this.ctx.clock.now(),
        });
        try {
          await em.flush();
        } catch (err) {
          if (err instanceof UniqueConstraintViolationException) throw new AlreadyExistsError('Channel', 'name', name);
          throw err;
        }
        return { channel, secret };
      },
      (created) => ({ targetId: created.channel.id }),
    );
  }

  /** Replaces the secret; the old one stops verifying at once. */
  async rotateSecret(channelId: string): Promise<ChannelWithSecret> {
    return audited(
      this.ctx,
      'rotateChannelSecret',
      { targetId: channelId.slice(0, 300) },
      async (em) => {
        const channel = await this.managed(em, channelId);
        const secret = newChannelSecret();
        Object.assign(channel, sealChannelSecret(this.ctx.secrets, channel.id, secret));
        await em.flush();
        return { channel, secret };
      },
      (rotated) => ({ tenantId: rotated.channel.tenant.id }),
    );
  }

  /** Deletes the channel with its pending and past deliveries; its messages stay. */
  async delete(channelId: string): Promise<Channel> {
    return audited(
      this.ctx,
      'deleteChannel',
      { targetId: channelId.slice(0, 300) },
      async (em) => {
        const channel = await this.managed(em, channelId);
        // Written out rather than left to the foreign keys' cascade, which SQLite applies only when enabled.
        await em.nativeDelete(ChannelDelivery, { channel: channel.id });
        await em.nativeDelete(ChannelThread, { channel: channel.id });
        await em.nativeDelete(ChannelNonce, { channel: channel.id });
        em.remove(channel);
        await em.flush();
        return channel;
      },
      (channel) => ({ tenantId: channel.tenant.id }),
    );
  }

  /** The tenant's channels, oldest first (tenant OPERATOR). */
  async list(tenantId: string, args: PageArgs): Promise<Page<Channel>> {
    if (!hasTenantRole(this.ctx.identity, tenantId, 'OPERATOR'))
      throw new ForbiddenError('seeing channels needs the OPERATOR role');
    return keysetPage(this.ctx.em, Channel, { tenant: tenantId }, args);
  }

  /** A channel's deliveries, oldest first, each with every attempt made. */
  async deliveries(channel: Channel, args: PageArgs): Promise<Page<ChannelDelivery>> {
    if (!hasTenantRole(this.ctx.identity, channel.tenant.id, 'OPERATOR'))
      throw new ForbiddenError('seeing deliveries needs the OPERATOR role');
    return keysetPage(this.ctx.em, ChannelDelivery, { channel: channel.id }, args);
  }

  async findVisibleByIds(ids: readonly string[]): Promise<Channel[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const rows = await this.ctx.em.find(Channel, { id: { $in: wanted } });
    return rows.filter((c) => hasTenantRole(this.ctx.identity, c.tenant.id, 'OPERATOR'));
  }

  async findVisibleDeliveriesByIds(ids: readonly string[]): Promise<ChannelDelivery[]> {
    const wanted = ids.filter(isUuid);
    if (wanted.length === 0) return [];
    const rows = await this.ctx.em.find(ChannelDelivery, { id: { $in: wanted } }, { populate: ['channel'] });
    return rows.filter((d) => hasTenantRole(this.ctx.identity, d.channel.tenant.id, 'OPERATOR'));
  }

  private requireAdmin(tenantId: string): void {
    const { identity } = this.ctx;
    if (!isUuid(tenantId) || !hasTenantRole(identity, tenantId, 'VIEWER')) throw new NotFoundError('Tenant', tenantId);
    if (!hasTenantRole(identity, tenantId, 'ADMIN'))
      throw new ForbiddenError('only a tenant ADMIN may manage channels');
  }

  private async managed(em: Em, channelId: string): Promise<Channel> {
    const channel = isUuid(channelId) ? await em.findOne(Channel, { id: channelId }) : null;
    if (!channel || !hasTenantRole(this.ctx.identity, channel.tenant.id, 'VIEWER'))
      throw new NotFoundError('Channel', channelId);
    if (!hasTenantRole(this.ctx.identity, channel.tenant.id, 'ADMIN'))
      throw new ForbiddenError('only a tenant ADMIN may manage channels');
    return channel;
  }
}

/**
 * `flotilla keys rotate-secrets`: seals every channel secret under the keyring's encrypting key,
 * in batches of one transaction each: those under an older key, and those still stored in clear
 * (rows from before secrets were sealed). Returns how many moved. A secret whose key is missing
 * stops it with SecretKeyUnavailableError (naming the key), leaving the rest as they were.
 */
export async function resealChannelSecrets(
  em: Em,
  keyring: SecretKeyring,
  batchSize: number = SECRET_REENCRYPT_BATCH,
): Promise<number> {
  const target = keyring.encryptingKid;
  let moved = 0;
  for (;;) {
    const batch = await em.fork().transactional(async (tx) => {
      const rows = await tx.find(
        Channel,
        { $or: [{ secretKeyId: null }, { secretKeyId: { $ne: target } }] },
        { orderBy: { id: 'asc' }, limit: batchSize },
      );
      for (const row of rows) {
        const plain = openChannelSecret(keyring, row);
        Object.assign(row, sealChannelSecret(keyring, row.id, plain));
      }
      await tx.flush();
      return rows.length;
    });
    moved += batch;
    if (batch < batchSize) return moved;
  }
}

/** How many channel secrets each key id seals; the `null` key counts those still stored in clear. */
export async function channelSecretsPerKey(em: Em): Promise<Map<string | null, number>> {
  const rows = await runSql<{ key_id: string | null; n: number | string }[]>(
    em.fork(),
    'select secret_key_id as key_id, count(*) as n from channels group by secret_key_id',
    [],
  );
  return new Map(rows.map((r) => [r.key_id, Number(r.n)]));
}
