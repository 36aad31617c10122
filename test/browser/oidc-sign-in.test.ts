import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, ConsoleMessage, Page } from 'playwright-core';
import { build } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { type Flotilla, startFlotilla } from '../../src/server/app.js';
import { launchBrowser } from '../helpers/browser.js';
import { type IdentityProvider, startIdentityProvider } from '../helpers/identity-provider.js';

const SCREENSHOTS = join(process.cwd(), 'test-output', 'screenshots');
const CLIENT_ID = 'flotilla-dashboard';
const PROVIDER_NAME = 'Corp SSO';
/** Short, so the dashboard has to renew the ID token while the test watches. */
const ID_TOKEN_TTL_SECONDS = 10;
const STEP_TIMEOUT_MS = 120_000;
const TOKEN_KEY = 'flotilla.token';

/**
 * Dashboard sign-in through a real OpenID provider started by the test (oidc-provider, its
 * development login form), in the real Chromium: authorization code with PKCE, group → role
 * mapping, renewal before expiry, sign-out, and a forged `state` refused.
 */
describe('dashboard sign-in through OIDC in a real browser', { timeout: STEP_TIMEOUT_MS }, () => {
  let dataDir: string;
  let webDir: string;
  let idp: IdentityProvider;
  let app: Flotilla;
  let browser: Browser;
  let page: Page;
  let launchError: Error | undefined;
  const consoleErrors: string[] = [];

  const shot = (name: string, target: Page = page) =>
    target.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
  const gql = async (query: string, token: string, variables: Record<string, unknown> = {}) => {
    const res = await fetch(app.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
    return (await res.json()) as { data?: Record<string, unknown>; errors?: { extensions?: { code?: string } }[] };
  };
  const adminToken = () => app.adminToken?.token as string;

  /** A fresh browser context: its own cookies (no provider session) and its own tabs. */
  async function newContext(): Promise<{ context: BrowserContext; page: Page }> {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    // The provider's pages import a web font from the internet: nothing leaves this machine.
    await ctx.route(
      (url) => url.hostname !== '127.0.0.1',
      (route) => route.abort(),
    );
    const p = await ctx.newPage();
    p.on('console', (m: ConsoleMessage) => {
      // Only the dashboard's own page is judged (the provider's pages log the blocked font).
      if (m.type() === 'error' && m.location().url.startsWith(app.url)) consoleErrors.push(m.text());
    });
    p.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
    return { context: ctx, page: p };
  }

  /** From the dashboard's sign-in view through the provider's login form. */
  async function signInAtProvider(target: Page, login: string): Promise<void> {
    await target.getByRole('button', { name: `Sign in with ${PROVIDER_NAME}` }).click();
    await target.waitForURL((url) => url.origin === idp.issuer);
    await target.locator('input[name="login"]').fill(login);
    await target.locator('input[name="password"]').fill('any password');
    await target.getByRole('button', { name: 'Sign-in' }).click();
  }

  const storedToken = (target: Page = page) =>
    target.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY) as Promise<string | null>;
  const claimsOf = (jwt: string) =>
    JSON.parse(Buffer.from(jwt.split('.')[1] as string, 'base64url').toString('utf8')) as Record<string, unknown>;

  beforeAll(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    // Its own build of the current web/ sources (another browser test may be rebuilding dist/web).
    webDir = mkdtempSync(join(tmpdir(), 'flotilla-web-'));
    await build({ configFile: 'web/vite.config.ts', logLevel: 'warn', build: { outDir: webDir, emptyOutDir: true } });
    dataDir = mkdtempSync(join(tmpdir(), 'flotilla-oidc-'));
    idp = await startIdentityProvider({ alice: ['acme-ops'], bob: ['other-admins'] });
    const config = loadConfig({
      FLOTILLA_DATABASE_URL: `sqlite:${join(dataDir, 'flotilla.db')}`,
      FLOTILLA_DATA_DIR: dataDir,
      FLOTILLA_PORT: '0',
      FLOTILLA_LOG_LEVEL: 'silent',
      FLOTILLA_OIDC_ISSUERS: JSON.stringify([
        {
          issuer: idp.issuer,
          // The API audience; the dashboard's client id is accepted too, for the ID tokens it sends.
          audience: 'flotilla-api',
          jwksUrl: idp.jwksUrl,
          subjectPrefix: 'corp:',
          groupRoles: [
            { group: 'acme-ops', tenant: 'acme', role: 'OPERATOR' },
            { group: 'other-admins', tenant: 'other', role: 'ADMIN' },
          ],
        },
      ]),
      FLOTILLA_OIDC_DASHBOARD_CLIENT_ID: CLIENT_ID,
      FLOTILLA_OIDC_DASHBOARD_SCOPES: 'openid groups',
      FLOTILLA_OIDC_DASHBOARD_NAME: PROVIDER_NAME,
    });
    app = await startFlotilla(config, { dashboardDir: webDir });
    await app.ready;
    idp.serve({ origin: app.url, clientId: CLIENT_ID, idTokenTtlSeconds: ID_TOKEN_TTL_SECONDS });
    for (const slug of ['acme', 'other']) {
      const created = await gql(
        'mutation($input: CreateTenantInput!) { createTenant(input: $input) { __typename } }',
        adminToken(),
        { input: { slug, name: `${slug[0]?.toUpperCase()}${slug.slice(1)} fleet` } },
      );
      expect(created.data?.createTenant).toEqual({ __typename: 'CreateTenantPayload' });
    }
    try {
      browser = await launchBrowser();
    } catch (error) {
      launchError = error instanceof Error ? error : new Error(String(error));
      return;
    }
    ({ page } = await newContext());
  });

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await idp?.close();
    for (const dir of [dataDir, webDir]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('starts the Chromium that npm ci installed', () => {
    expect(launchError?.message).toBeUndefined();
    expect(browser.isConnected()).toBe(true);
  });

  it('tells the dashboard where to sign in, with nothing secret', async () => {
    const res = await fetch(`${app.url}/dashboard/config.json`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      signIn: { issuer: idp.issuer, clientId: CLIENT_ID, scopes: 'openid groups', name: PROVIDER_NAME },
    });
  });

  it("signs in through the provider and shows the tenant its group's role allows, not another", async () => {
    await page.goto(`${app.url}/`);
    await page.getByRole('button', { name: `Sign in with ${PROVIDER_NAME}` }).waitFor();
    // Pasting a token stays possible.
    await page.getByLabel('Token').waitFor();
    await shot('oidc-sign-in');

    await signInAtProvider(page, 'alice');
    await page.getByRole('link', { name: /Acme fleet/ }).waitFor();
    expect(page.url()).toBe(`${app.url}/#/`); // the code and state are gone from the address bar
    expect(await page.getByRole('link', { name: /Other fleet/ }).count()).toBe(0);
    expect(idp.grants.authorization_code).toBe(1);

    // The tab keeps the ID token, addressed to the dashboard, in sessionStorage only.
    const token = (await storedToken()) as string;
    expect(claimsOf(token)).toMatchObject({ iss: idp.issuer, aud: CLIENT_ID, sub: 'alice', groups: ['acme-ops'] });
    const inLocalStorage = await page.evaluate(
      (t) => Object.keys(localStorage).filter((k) => (localStorage.getItem(k) ?? '').includes(t)),
      token,
    );
    expect(inLocalStorage).toEqual([]);
    // Flotilla maps the group to a role in acme, and nothing else.
    const seen = await gql(
      '{ viewer { subject platformAdmin } tenants(first: 10) { edges { node { slug } } } }',
      token,
    );
    expect(seen.data).toEqual({
      viewer: { subject: 'corp:alice', platformAdmin: false },
      tenants: { edges: [{ node: { slug: 'acme' } }] },
    });
    await shot('oidc-signed-in');
  });

  it("renews the token before it expires and keeps working past the first token's expiry", async () => {
    const first = (await storedToken()) as string;
    const firstExpiry = Number(claimsOf(first).exp) * 1000;
    // Two renewals by the refresh token: the second one was asked for with the first token already expired.
    await expect
      .poll(() => idp.grants.refresh_token ?? 0, { timeout: 4 * ID_TOKEN_TTL_SECONDS * 1000, interval: 500 })
      .toBeGreaterThanOrEqual(2);
    await expect.poll(() => Date.now() > firstExpiry, { timeout: ID_TOKEN_TTL_SECONDS * 1000 }).toBe(true);
    // Flotilla refuses the first token now …
    const refused = await gql('{ viewer { subject } }', first);
    expect(refused.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    // … and the page works on with the renewed one, without signing in again.
    const current = (await storedToken()) as string;
    expect(current).not.toBe(first);
    await page.getByRole('link', { name: /Acme fleet/ }).click();
    await page.getByRole('heading', { name: /Acme fleet/ }).waitFor();
    await expect.poll(() => page.locator('#connection').innerText(), { timeout: 30_000 }).toMatch(/live|resumed/);
    expect(idp.grants.authorization_code).toBe(1);
    expect(page.url()).toContain(app.url);
  });

  it("signs out: the tab forgets the tokens, the provider's session ends, the signed-out view returns", async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL((url) => url.origin === idp.issuer);
    await page.getByRole('button', { name: 'Yes, sign me out' }).click();
    await page.getByRole('button', { name: `Sign in with ${PROVIDER_NAME}` }).waitFor();
    expect(new URL(page.url()).origin).toBe(app.url);
    expect(await storedToken()).toBeNull();
    expect(await page.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith('flotilla.')))).toEqual([]);
    await shot('oidc-signed-out');
    // The provider forgot the session: signing in again asks for the login form.
    await page.getByRole('button', { name: `Sign in with ${PROVIDER_NAME}` }).click();
    await page.locator('input[name="login"]').waitFor();
  });

  it('refuses a sign-in response whose state is not the one this tab sent, and exchanges nothing', async () => {
    const own = await newContext();
    try {
      // This tab starts a sign-in (its state is kept in the tab) and is at the provider's form …
      await own.page.goto(`${app.url}/`);
      const [authorization] = await Promise.all([
        own.page.waitForRequest((r) => r.url().startsWith(`${idp.issuer}/auth`)),
        own.page.getByRole('button', { name: `Sign in with ${PROVIDER_NAME}` }).click(),
      ]);
      await own.page.locator('input[name="login"]').waitFor();
      const sent = new URL(authorization.url()).searchParams.get('state');
      expect(sent).toBeTruthy();
      // … when a response for another sign-in arrives (a forged or replayed callback).
      const tokenRequestsBefore = idp.tokenRequests;
      await own.page.goto(`${app.url}/?code=someone-elses-code&state=not-${sent}`);
      const alert = own.page.getByRole('alert').filter({ hasText: 'state' });
      await alert.waitFor();
      expect(await alert.innerText()).toContain('does not belong to a sign-in started in this tab');
      expect(idp.tokenRequests).toBe(tokenRequestsBefore);
      expect(await storedToken(own.page)).toBeNull();
      expect(own.page.url()).toBe(`${app.url}/`);
      await own.page.getByRole('button', { name: `Sign in with ${PROVIDER_NAME}` }).waitFor();
      await shot('oidc-state-refused', own.page);
    } finally {
      await own.context.close();
    }
  });

  it('renews by a silent re-login on the provider session when the provider gives no refresh token', async () => {
    idp.serve({ origin: app.url, clientId: CLIENT_ID, idTokenTtlSeconds: ID_TOKEN_TTL_SECONDS, refreshTokens: false });
    const own = await newContext();
    try {
      await own.page.goto(`${app.url}/`);
      await signInAtProvider(own.page, 'alice');
      await own.page.getByRole('link', { name: /Acme fleet/ }).click();
      await own.page.getByRole('heading', { name: /Acme fleet/ }).waitFor();
      const stored = await own.page.evaluate(() => sessionStorage.getItem('flotilla.oidc.tokens'));
      expect(JSON.parse(stored as string)).toMatchObject({ refreshToken: null });
      const first = await storedToken(own.page);
      const codes = idp.grants.authorization_code ?? 0;
      const forms = idp.loginForms;
      const refreshes = idp.grants.refresh_token ?? 0;
      // Before expiry the tab goes through the authorization endpoint with prompt=none and comes back.
      await expect
        .poll(() => idp.grants.authorization_code ?? 0, { timeout: 3 * ID_TOKEN_TTL_SECONDS * 1000, interval: 500 })
        .toBeGreaterThan(codes);
      await expect.poll(() => storedToken(own.page)).not.toBe(first);
      // Without a login form, on the same route, signed in.
      await own.page.getByRole('heading', { name: /Acme fleet/ }).waitFor();
      expect(new URL(own.page.url()).hash).toMatch(/^#\/t\//);
      expect(idp.loginForms).toBe(forms);
      expect(idp.grants.refresh_token ?? 0).toBe(refreshes);
    } finally {
      await own.context.close();
    }
  });

  it('logged no errors in the dashboard', () => {
    expect(consoleErrors).toEqual([]);
  });
});
