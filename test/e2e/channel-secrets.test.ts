import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecretKeyring } from '../../src/auth/secret-keys.js';
import { loadConfig } from '../../src/config/index.js';
import { ChannelNonce } from '../../src/db/entities/channel.js';
import { Message } from '../../src/db/entities/message.js';
import { resealChannelSecrets } from '../../src/domain/channels.js';
import { listSecretKeys, removeSecretKey, rotateSecrets } from '../../src/ops/secrets-keys.js';
import { Receiver, sign, signedInbound, until } from '../helpers/channels.js';
import { DRIVERS, tempDir } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  type RegisteredWorker,
  registerWorker,
  uniqueName,
} from '../helpers/fleet.js';
import { localId, startTestServer, type TestServer } from '../helpers/server.js';

/** A FLOTILLA_SECRETS_KEY entry: `kid:` and 32 random bytes in base64. */
const keyEntry = (kid: string) => `${kid}:${randomBytes(32).toString('base64')}`;

interface Chan {
  id: string;
  name: string;
  secret: string;
}

interface DeliveryView {
  status: string;
  attemptCount: number;
  attempts: { number: number; statusCode: number | null; error: string | null }[];
}

const captured = () => {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, output: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) } };
};

describe.each(DRIVERS)("channels' signing secrets sealed at rest on %s", (kind) => {
  const receiver = new Receiver();
  const servers: TestServer[] = [];
  beforeAll(async () => {
    await receiver.start();
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await receiver.close();
  });

  async function start(env: Record<string, string>, databaseUrl?: string, adminToken?: string): Promise<TestServer> {
    const server = await startTestServer(kind, {
      databaseUrl,
      adminToken,
      env: {
        FLOTILLA_RATE_LIMIT_PER_MINUTE: '100000',
        FLOTILLA_CHANNEL_RETRY_BASE_MS: '20',
        FLOTILLA_CHANNEL_MAX_ATTEMPTS: '2',
        ...env,
      },
    });
    servers.push(server);
    return server;
  }

  async function stop(server: TestServer): Promise<void> {
    servers.splice(servers.indexOf(server), 1);
    await server.close();
  }

  /** A tenant with a worker holding the lease of one sandbox, as the agent's side of a channel. */
  async function fleet(server: TestServer) {
    const tenantId = await createTenant(server, uniqueName('chsec'));
    const worker = await registerWorker(server, uniqueName('w'), { tenantId });
    const sandboxId = (await createSandbox(server, tenantId)).sandbox.id;
    return { tenantId, worker, sandboxId };
  }

  async function createChannel(server: TestServer, tenantId: string): Promise<Chan> {
    const name = uniqueName('ch')
      .toLowerCase()
      .replace(/[^a-z0-9_-]/g, '-');
    const res = await server.gql<{
      createChannel: { __typename: string; secret: string; channel: { id: string; name: string } };
    }>(
      `mutation($input: CreateChannelInput!) { createChannel(input: $input) { __typename
        ... on ChannelSecretPayload { secret channel { id name } } ${ERROR_FIELDS} } }`,
      { input: { tenantId, name, outboundUrl: receiver.url } },
    );
    const created = dataOf(res).createChannel;
    expect(created.__typename, JSON.stringify(created)).toBe('ChannelSecretPayload');
    return { ...created.channel, secret: created.secret };
  }

  async function rotateChannel(server: TestServer, ch: Chan): Promise<Chan> {
    const res = await server.gql<{ rotateChannelSecret: { secret: string } }>(
      'mutation($id: ID!) { rotateChannelSecret(input: { channelId: $id }) { ... on ChannelSecretPayload { secret } } }',
      { id: ch.id },
    );
    return { ...ch, secret: dataOf(res).rotateChannelSecret.secret };
  }

  /** The channel's row as the database holds it. */
  async function rawRow(server: TestServer, ch: Chan): Promise<{ secret: string; secret_key_id: string | null }> {
    const rows = (await server.app.db.orm.em
      .fork()
      .getConnection()
      .execute('select secret, secret_key_id from channels where id = ?', [localId(ch.id)])) as {
      secret: string;
      secret_key_id: string | null;
    }[];
    expect(rows).toHaveLength(1);
    return rows[0];
  }

  async function setRaw(server: TestServer, ch: Chan, secret: string, keyId: string | null): Promise<void> {
    await server.app.db.orm.em
      .fork()
      .getConnection()
      .execute('update channels set secret = ?, secret_key_id = ? where id = ?', [secret, keyId, localId(ch.id)]);
  }

  /** A person's first message on a new thread of the sandbox: binds the thread to the channel. */
  async function say(server: TestServer, ch: Chan, sandboxId: string, threadId: string, secret = ch.secret) {
    return signedInbound(
      server,
      { id: ch.id, secret },
      { threadId, sandboxId: localId(sandboxId), body: 'hello', sender: 'ada' },
    );
  }

  async function postAgent(server: TestServer, worker: RegisteredWorker, sandboxId: string, threadId: string) {
    const lease = await acquireLease(server, worker, sandboxId);
    const body = `reply-${randomBytes(6).toString('hex')}`;
    const res = await server.gql<{ postAgentMessage: { __typename: string } }>(
      `mutation($i: PostAgentMessageInput!) { postAgentMessage(input: $i) { __typename } }`,
      { i: { sandboxId, fencingToken: lease.lease.fencingToken, threadId, body } },
      worker.token,
    );
    expect(dataOf(res).postAgentMessage.__typename).toBe('MessagePayload');
    return body;
  }

  /** Posts an agent reply on the thread and waits for the receiver to get it; returns the request. */
  async function replyArrives(server: TestServer, worker: RegisteredWorker, sandboxId: string, threadId: string) {
    const body = await postAgent(server, worker, sandboxId, threadId);
    await until('the reply to arrive', () => receiver.requests.some((r) => r.payload.body === body));
    return receiver.requests.find((r) => r.payload.body === body) as (typeof receiver.requests)[number];
  }

  function signedWith(got: (typeof receiver.requests)[number], secret: string): boolean {
    const timestamp = String(got.headers['x-flotilla-timestamp']);
    return got.headers['x-flotilla-signature'] === sign(secret, [timestamp, got.body]);
  }

  async function deliveries(server: TestServer, ch: Chan): Promise<DeliveryView[]> {
    const res = await server.gql<{ node: { deliveries: { edges: { node: DeliveryView }[] } } }>(
      `query($id: ID!) { node(id: $id) { ... on Channel { deliveries(first: 100) { edges { node {
        status attemptCount attempts { number statusCode error } } } } } } }`,
      { id: ch.id },
    );
    return dataOf(res).node.deliveries.edges.map((e) => e.node);
  }

  async function written(server: TestServer) {
    const em = server.app.db.orm.em.fork();
    return { messages: await em.count(Message, {}), nonces: await em.count(ChannelNonce, {}) };
  }

  it('keeps no clear secret in the row after createChannel and rotateChannelSecret; inbound and outbound still sign', async () => {
    const server = await start({ FLOTILLA_SECRETS_KEY: keyEntry('k1') });
    const { tenantId, worker, sandboxId } = await fleet(server);
    const ch = await createChannel(server, tenantId);
    const created = await rawRow(server, ch);
    expect(created.secret_key_id).toBe('k1');
    expect(created.secret).not.toContain(ch.secret.slice('whsec_'.length));
    expect((await say(server, ch, sandboxId, 'before-rotation')).status).toBe(201);
    expect(signedWith(await replyArrives(server, worker, sandboxId, 'before-rotation'), ch.secret)).toBe(true);

    const rotated = await rotateChannel(server, ch);
    const after = await rawRow(server, rotated);
    expect(after.secret_key_id).toBe('k1');
    expect(after.secret).not.toBe(created.secret);
    for (const secret of [ch.secret, rotated.secret]) expect(after.secret).not.toContain(secret.slice(6));
    expect((await say(server, rotated, sandboxId, 'after-rotation', ch.secret)).status).toBe(401);
    expect((await say(server, rotated, sandboxId, 'after-rotation')).status).toBe(201);
    const got = await replyArrives(server, worker, sandboxId, 'after-rotation');
    expect(signedWith(got, rotated.secret)).toBe(true);
    expect(signedWith(got, ch.secret)).toBe(false);
  });

  it('refuses a sealed secret copied onto another channel (401) and writes nothing', async () => {
    const server = await start({ FLOTILLA_SECRETS_KEY: keyEntry('k1') });
    const { tenantId, sandboxId } = await fleet(server);
    const source = await createChannel(server, tenantId);
    const target = await createChannel(server, tenantId);
    const copied = await rawRow(server, source);
    await setRaw(server, target, copied.secret, copied.secret_key_id);
    const before = await written(server);
    for (const secret of [source.secret, target.secret]) {
      const res = await say(server, target, sandboxId, 'copied', secret);
      expect(res.status).toBe(401);
      expect(JSON.stringify(res.json)).not.toContain(secret);
    }
    expect(await written(server)).toEqual(before);
    // The row it came from still verifies.
    expect((await say(server, source, sandboxId, 'original')).status).toBe(201);
  });

  it('without the key that sealed a secret: inbound answers 503 naming the key and writes nothing; the drainer records the failed attempt and goes on', async () => {
    const k1 = keyEntry('k1');
    const k2 = keyEntry('k2');
    const first = await start({ FLOTILLA_SECRETS_KEY: k1 });
    const { tenantId, worker, sandboxId } = await fleet(first);
    const ch = await createChannel(first, tenantId);
    expect((await say(first, ch, sandboxId, 'orphaned')).status).toBe(201);
    const { databaseUrl, adminToken } = first;
    await stop(first);

    const server = await start({ FLOTILLA_SECRETS_KEY: k2 }, databaseUrl, adminToken);
    const before = await written(server);
    const refused = await signedInbound(server, ch, { threadId: 'orphaned', body: 'anyone?', sender: 'ada' });
    expect(refused.status).toBe(503);
    expect(refused.json.reason).toEqual(expect.stringContaining('secrets key "k1"'));
    expect(JSON.stringify(refused.json)).not.toContain(ch.secret);
    expect(await written(server)).toEqual(before);

    const body = await postAgent(server, worker, sandboxId, 'orphaned');
    await until('the delivery to fail for good', async () => (await deliveries(server, ch))[0]?.status === 'FAILED');
    const [failed] = await deliveries(server, ch);
    expect(failed.attemptCount).toBe(2);
    for (const attempt of failed.attempts) {
      expect(attempt.statusCode).toBeNull();
      expect(attempt.error).toContain('secrets key "k1"');
      expect(attempt.error).not.toContain(ch.secret);
    }
    expect(receiver.bodies((r) => r.payload.body === body)).toEqual([]);

    // The drainer goes on: a channel sealed with the key this server has delivers, signed.
    const fresh = await createChannel(server, tenantId);
    expect((await say(server, fresh, sandboxId, 'fresh')).status).toBe(201);
    expect(signedWith(await replyArrives(server, worker, sandboxId, 'fresh'), fresh.secret)).toBe(true);
  });

  it('rotate-secrets with the key file re-encrypts channel secrets; remove-secrets refuses the key in use, and signing works once the old key is gone', async () => {
    const dataDir = tempDir('flotilla-data-');
    const server = await start({ FLOTILLA_DATA_DIR: dataDir });
    const { tenantId, worker, sandboxId } = await fleet(server);
    const ch = await createChannel(server, tenantId);
    const sealed = await rawRow(server, ch);
    const oldKid = sealed.secret_key_id as string;
    expect(oldKid).toMatch(/^k\w+$/);

    const config = loadConfig({ FLOTILLA_DATA_DIR: dataDir, FLOTILLA_DATABASE_URL: server.databaseUrl });
    const refused = captured();
    expect(await removeSecretKey(config, oldKid, refused.output)).toBe(1);
    expect(refused.err.join('\n')).toContain('1 channel secret(s)');
    const rotated = captured();
    expect(await rotateSecrets(config, rotated.output)).toBe(0);
    expect(rotated.out).toEqual([
      expect.stringMatching(/^re-encrypted 0 secret\(s\) and 1 channel secret\(s\) under key k\w+$/),
    ]);
    const resealed = await rawRow(server, ch);
    const newKid = resealed.secret_key_id as string;
    expect(newKid).not.toBe(oldKid);
    expect(resealed.secret).not.toBe(sealed.secret);
    expect(resealed.secret).not.toContain(ch.secret.slice(6));

    const stillUsed = captured();
    expect(await removeSecretKey(config, newKid, stillUsed.output)).toBe(1);
    expect(stillUsed.err.join('\n')).toContain(`key ${newKid} still encrypts 0 secret(s), 1 channel secret(s)`);
    expect(await removeSecretKey(config, oldKid, captured().output)).toBe(0);
    const listed = captured();
    expect(await listSecretKeys(config, listed.output)).toBe(0);
    expect(listed.out).toEqual([`${newKid}  0 secret(s), 1 channel secret(s)  ENCRYPTING`]);

    // The running server reads the rotated key file: the channel still verifies and signs.
    expect((await say(server, ch, sandboxId, 'rotated')).status).toBe(201);
    expect(signedWith(await replyArrives(server, worker, sandboxId, 'rotated'), ch.secret)).toBe(true);
  });

  it('reseals every channel secret under the first configured key in batches, clear ones included; a server with only that key verifies them all', async () => {
    const k1 = { kid: 'k1', key: randomBytes(32) };
    const k2 = { kid: 'k2', key: randomBytes(32) };
    const entry = (k: { kid: string; key: Buffer }) => `${k.kid}:${k.key.toString('base64')}`;
    const first = await start({ FLOTILLA_SECRETS_KEY: entry(k1) });
    const { tenantId, sandboxId } = await fleet(first);
    const channels: Chan[] = [];
    for (let i = 0; i < 5; i++) channels.push(await createChannel(first, tenantId));
    for (const ch of channels.slice(0, 2)) await setRaw(first, ch, ch.secret, null);
    const keyring = SecretKeyring.open([k2, k1], join(tempDir('flotilla-keys-'), 'unused.json'));
    // In batches of 2 (the last one short), until none is left: a second run finds nothing.
    expect(await resealChannelSecrets(first.app.db.orm.em.fork(), keyring, 2)).toBe(5);
    expect(await resealChannelSecrets(first.app.db.orm.em.fork(), keyring, 2)).toBe(0);
    for (const ch of channels) {
      const row = await rawRow(first, ch);
      expect(row.secret_key_id).toBe('k2');
      expect(row.secret).not.toContain(ch.secret.slice(6));
    }
    const { databaseUrl, adminToken } = first;
    await stop(first);

    const server = await start({ FLOTILLA_SECRETS_KEY: entry(k2) }, databaseUrl, adminToken);
    for (const [i, ch] of channels.entries())
      expect((await say(server, ch, sandboxId, `resealed-${i}`)).status).toBe(201);
  });

  it('still verifies a row stored in clear from before sealing, and rotate-secrets seals it', async () => {
    const key = keyEntry('k1');
    const dataDir = tempDir('flotilla-data-');
    const server = await start({ FLOTILLA_SECRETS_KEY: key, FLOTILLA_DATA_DIR: dataDir });
    const { tenantId, worker, sandboxId } = await fleet(server);
    const ch = await createChannel(server, tenantId);
    await setRaw(server, ch, ch.secret, null);
    expect((await say(server, ch, sandboxId, 'legacy')).status).toBe(201);
    expect(signedWith(await replyArrives(server, worker, sandboxId, 'legacy'), ch.secret)).toBe(true);

    const config = loadConfig({
      FLOTILLA_SECRETS_KEY: key,
      FLOTILLA_DATA_DIR: dataDir,
      FLOTILLA_DATABASE_URL: server.databaseUrl,
    });
    const listed = captured();
    await listSecretKeys(config, listed.output);
    expect(listed.out).toEqual([
      'k1  0 secret(s)  ENCRYPTING',
      '(none)  1 channel secret(s)  IN CLEAR (run flotilla keys rotate-secrets to seal them)',
    ]);
    const rotated = captured();
    expect(await rotateSecrets(config, rotated.output)).toBe(0);
    expect(rotated.out).toEqual(['re-encrypted 0 secret(s) and 1 channel secret(s) under key k1']);
    const row = await rawRow(server, ch);
    expect(row.secret_key_id).toBe('k1');
    expect(row.secret).not.toContain(ch.secret.slice(6));
    // A second run has nothing left to do.
    const again = captured();
    expect(await rotateSecrets(config, again.output)).toBe(0);
    expect(again.out).toEqual(['re-encrypted 0 secret(s) under key k1']);

    expect((await say(server, ch, sandboxId, 'sealed')).status).toBe(201);
    expect(signedWith(await replyArrives(server, worker, sandboxId, 'sealed'), ch.secret)).toBe(true);
  });
});
