import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, BrowserContext, ConsoleMessage, Locator, Page } from 'playwright-core';
import { build } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CreateSandboxDocument,
  createClient,
  type FlotillaClient,
  SandboxesDocument,
  SendMessageDocument,
  StopSandboxDocument,
} from '../../src/client/index.js';
import { loadConfig } from '../../src/config/index.js';
import { type Demo, startDemo } from '../../src/demo.js';
import { type Flotilla, startFlotilla } from '../../src/server/app.js';
import { launchBrowser } from '../helpers/browser.js';

const SCREENSHOTS = join(process.cwd(), 'test-output', 'screenshots');
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
/** Long enough for a worker round trip (placement, process start, agent output) on a busy 2-core machine. */
const LIVE_TIMEOUT_MS = 45_000;
/** A step may wait on the worker twice; the default 60 s test timeout is too tight under a full run. */
const STEP_TIMEOUT_MS = 120_000;
/** The demo agents think this long between steps: short, so replies arrive quickly. */
const AGENT_THINK_MS = '200';
/** What the browser itself logs while the server is down (not the page's code). */
const SERVER_DOWN_NOISE = /WebSocket connection to '.*' failed/;
/** What the browser itself logs when the server answers a wrong token with 401. */
const WRONG_TOKEN_NOISE = /status of 401/;

describe('dashboard in a real browser', { timeout: STEP_TIMEOUT_MS }, () => {
  let dataDir: string;
  let demo: Demo;
  let app: Flotilla;
  let port: number;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let api: FlotillaClient;
  let sandboxId: string;
  let sandboxName: string;
  const consoleErrors: string[] = [];
  /** Browser-logged errors a step provokes on purpose; anything else is a failure. */
  let expectedNoise: RegExp | null = null;
  let launchError: Error | undefined;

  /** Monaco renders spaces as no-break spaces. */
  const textOf = async (locator: Locator) => (await locator.innerText()).replace(/\u00a0/g, ' ');
  const shot = (name: string, target: Page = page) =>
    target.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
  const collectErrors = (target: Page, label: string) => {
    target.on('console', (m: ConsoleMessage) => {
      if (m.type() !== 'error') return;
      if (expectedNoise?.test(m.text())) return;
      consoleErrors.push(`${label}: ${m.text()}`);
    });
    target.on('pageerror', (e) => consoleErrors.push(`${label} pageerror: ${e.message}`));
  };
  const configFor = (listenPort: number) =>
    loadConfig({
      FLOTILLA_DATABASE_URL: `sqlite:${join(dataDir, 'demo.db')}`,
      FLOTILLA_DATA_DIR: dataDir,
      FLOTILLA_PORT: String(listenPort),
      FLOTILLA_LOG_LEVEL: 'error',
    });

  beforeAll(async () => {
    // Always test the current web/ sources, never a stale dist/web.
    await build({ configFile: 'web/vite.config.ts', logLevel: 'warn' });
    mkdirSync(SCREENSHOTS, { recursive: true });
    dataDir = mkdtempSync(join(tmpdir(), 'flotilla-browser-'));
    demo = await startDemo(
      {
        ...process.env,
        FLOTILLA_DATA_DIR: dataDir,
        FLOTILLA_PORT: '0',
        FLOTILLA_LOG_LEVEL: 'error',
        DEMO_THINK_MS: AGENT_THINK_MS,
      },
      () => {},
    );
    app = demo.app;
    port = app.port;
    api = createClient({ url: app.graphqlUrl, token: demo.adminToken });
    // A browser that cannot start fails the first test with the reason (and every later one), never a skip.
    try {
      browser = await launchBrowser();
    } catch (error) {
      launchError = error instanceof Error ? error : new Error(String(error));
      return;
    }
    context = await browser.newContext({ viewport: DESKTOP });
    page = await context.newPage();
    collectErrors(page, 'dashboard');
  });

  afterAll(async () => {
    await api?.close();
    await browser?.close();
    for (const w of demo?.workers ?? []) w.kill('SIGTERM');
    await Promise.all(
      (demo?.workers ?? []).map((w) =>
        w.exitCode !== null || w.signalCode !== null ? Promise.resolve() : new Promise((r) => w.once('exit', r)),
      ),
    );
    // After a failed restart step the server may already be closed.
    await app?.close().catch(() => undefined);
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('starts the Chromium that npm ci installed', () => {
    expect(launchError?.message).toBeUndefined();
    expect(browser.isConnected()).toBe(true);
  });

  it('rejects a wrong token in words, then signs in and shows the demo fleet', async () => {
    await page.goto(`${app.url}/`);
    await expect.poll(() => page.getByRole('heading', { name: 'Sign in' }).isVisible()).toBe(true);
    await shot('sign-in');

    expectedNoise = WRONG_TOKEN_NOISE;
    await page.getByLabel('Token').fill('not-a-real-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'not accepted' }).waitFor();
    expectedNoise = null;

    await page.getByLabel('Token').fill(demo.adminToken);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const tenant = page.getByRole('link', { name: /Demo fleet/ });
    await tenant.waitFor();
    await shot('tenants');

    await tenant.click();
    await page.getByRole('heading', { name: /Demo fleet/ }).waitFor();
    await expect.poll(() => page.locator('#sandboxes tr[data-sandbox]').count()).toBe(4);
    await expect.poll(() => page.locator('#workers tr[data-worker]').count()).toBe(2);
    await expect.poll(() => page.locator('#workers').innerText()).toContain('ONLINE');
    await expect.poll(() => page.locator('#connection').innerText()).toBe('live');
    await shot('fleet');
  });

  it('shows a new sandbox going RUNNING when its worker reports, without a reload', async () => {
    // A marker on window disappears if the page reloads.
    await page.evaluate(() => Object.assign(window, { __sameDocument: true }));
    sandboxName = `watched-${Date.now().toString(36)}`;
    const created = await api.mutate(CreateSandboxDocument, {
      input: {
        tenantId: demo.tenantId,
        name: sandboxName,
        image: 'demo/agent:latest',
        command: [process.execPath, join(process.cwd(), 'examples/demo-agent.mjs')],
        resources: { cpuMillis: 250, memoryMb: 256 },
        ports: 1,
        stdinFraming: 'JSON_LINES',
      },
    });
    expect(created.ok && created.data.createSandbox.__typename).toBe('SandboxPayload');
    if (created.ok && created.data.createSandbox.__typename === 'SandboxPayload')
      sandboxId = created.data.createSandbox.sandbox.id;

    const row = page.locator(`#sandboxes tr[data-sandbox="${sandboxName}"]`);
    await row.waitFor({ timeout: LIVE_TIMEOUT_MS });
    await expect
      .poll(() => row.locator('[data-status]').getAttribute('data-status'), { timeout: LIVE_TIMEOUT_MS })
      .toBe('RUNNING');
    // The agent's own phase, reported by the worker, shows up too.
    await expect
      .poll(() => row.innerText(), { timeout: LIVE_TIMEOUT_MS })
      .toMatch(/THINKING|EXECUTING|WAITING_FOR_INPUT/);
    expect(await page.evaluate(() => '__sameDocument' in window)).toBe(true);
  });

  it('explains a quota breach in words on the create-sandbox form', async () => {
    await page.getByLabel('Name').fill('too-big');
    await page.getByLabel('Image').fill('demo/agent:latest');
    await page.getByLabel('CPU (millicores)').fill('100000');
    await page.getByRole('button', { name: 'Create sandbox' }).click();
    const alert = page.locator('#create-error');
    await alert.waitFor();
    const text = await alert.innerText();
    expect(text).toContain('quota');
    expect(text).toContain('CPU');
    expect(text).not.toContain('QUOTA_EXCEEDED');
    await expect(page.locator('#sandboxes tr[data-sandbox="too-big"]').count()).resolves.toBe(0);
    await shot('fleet-quota-error');
  });

  it('sends a message to the agent and shows its reply as it arrives', async () => {
    await page.getByRole('link', { name: sandboxName }).click();
    await page.getByRole('heading', { name: new RegExp(sandboxName) }).waitFor();
    // The agent asks for input once it has looked around.
    await page
      .locator('#thread li[data-sender="AGENT"]', { hasText: 'what should I do next?' })
      .first()
      .waitFor({ timeout: LIVE_TIMEOUT_MS });

    await page.getByLabel('Message', { exact: true }).fill('count the files');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('#thread li[data-sender="USER"]', { hasText: 'count the files' }).waitFor();
    await page
      .locator('#thread li[data-sender="AGENT"]', { hasText: 'you said "count the files"' })
      .waitFor({ timeout: LIVE_TIMEOUT_MS });
    // Once the worker wrote it to the agent's stdin, the message shows the delivered tick, live (no reload).
    const mine = page.locator('#thread li[data-sender="USER"]', { hasText: 'count the files' }).locator('.tick');
    await expect.poll(() => mine.getAttribute('data-delivery'), { timeout: LIVE_TIMEOUT_MS }).toBe('DELIVERED');
    expect(await mine.innerText()).toBe('✓✓');
    expect(await mine.getAttribute('aria-label')).toBe('delivered to the agent');
    // A message of several lines reaches the agent as one message (the sandbox's stdin is framed as JSON lines).
    await page.getByLabel('Message', { exact: true }).fill('first line\nsecond line\n');
    await page.getByRole('button', { name: 'Send' }).click();
    await page
      .locator('#thread li[data-sender="AGENT"]', { hasText: '(one message of 2 lines)' })
      .waitFor({ timeout: LIVE_TIMEOUT_MS });
    const multi = page.locator('#thread li[data-sender="USER"]', { hasText: 'second line' }).locator('.tick');
    await expect.poll(() => multi.getAttribute('data-delivery'), { timeout: LIVE_TIMEOUT_MS }).toBe('DELIVERED');
    await expect.poll(() => page.locator('#agent').innerText()).not.toBe('—');
    // Its allocated port is a link to the worker's public base URL (the demo workers' ranges start at 8100).
    expect(await page.locator('#ports a').getAttribute('href')).toMatch(/^http:\/\/127\.0\.0\.1:81\d\d$/);
    // A running sandbox can be restarted, next to Stop.
    expect(await page.getByRole('button', { name: 'Restart' }).isEnabled()).toBe(true);
    await shot('sandbox');
  });

  it("renders an agent's question as a form, answers it in the browser, and the agent stops waiting for input", async () => {
    const created = await api.mutate(CreateSandboxDocument, {
      input: {
        tenantId: demo.tenantId,
        name: `asker-${Date.now().toString(36)}`,
        image: 'demo/agent:latest',
        // Prints a question status line, then waits for the answer line on stdin (docs/worker.md).
        command: [process.execPath, join(process.cwd(), 'examples/ask-agent.mjs'), 'Deploy to production?', 'yes,no'],
        resources: { cpuMillis: 250, memoryMb: 256 },
      },
    });
    if (!created.ok || created.data.createSandbox.__typename !== 'SandboxPayload')
      throw new Error(JSON.stringify(created));
    const askerId = created.data.createSandbox.sandbox.id;
    // In a tab of its own (signed in there: the token is kept per tab), so the watched sandbox's
    // page and its live streams stay as they are for the steps that follow.
    const tab = await context.newPage();
    collectErrors(tab, 'question');
    await tab.goto(`${app.url}/#/s/${encodeURIComponent(askerId)}`);
    await tab.getByLabel('Token').fill(demo.adminToken);
    await tab.getByRole('button', { name: 'Sign in' }).click();

    const asked = tab.locator('#thread li[data-kind="QUESTION"]', { hasText: 'Deploy to production?' });
    const form = asked.locator('form.question-form');
    await form.waitFor({ timeout: LIVE_TIMEOUT_MS });
    await expect
      .poll(() => tab.locator('#agent').innerText(), { timeout: LIVE_TIMEOUT_MS })
      .toMatch(/^WAITING_FOR_INPUT/);
    expect(await form.getByRole('button').allInnerTexts()).toEqual(['yes', 'no']);
    await shot('sandbox-question', tab);

    await form.getByRole('button', { name: 'yes', exact: true }).click();
    await asked.locator('[data-outcome="ANSWERED"]', { hasText: 'answered: yes' }).waitFor();
    expect(await form.count()).toBe(0);
    await expect
      .poll(() => tab.locator('#agent').innerText(), { timeout: LIVE_TIMEOUT_MS })
      .not.toMatch(/waiting_for_input/i);
    // The answer reached the process: it says what it received.
    await tab
      .locator('#thread li[data-sender="AGENT"]', { hasText: 'going ahead with yes' })
      .waitFor({ timeout: LIVE_TIMEOUT_MS });
    expect(await tab.locator('#thread li[data-kind="ANSWER"]').innerText()).toContain('yes');
    await shot('sandbox-answered', tab);
    await tab.close();
  });

  it('survives a server restart: reconnecting, then resumed, with what happened meanwhile', async () => {
    expectedNoise = SERVER_DOWN_NOISE;
    await app.close();
    await expect
      .poll(() => page.locator('#connection').innerText(), { timeout: LIVE_TIMEOUT_MS })
      .toBe('reconnecting…');
    await shot('sandbox-reconnecting');

    // While the page's server is down, another server on the same database takes a message.
    const other = await startFlotilla(configFor(0));
    try {
      await other.ready;
      const meanwhile = createClient({ url: other.graphqlUrl, token: demo.adminToken });
      const sent = await meanwhile.mutate(SendMessageDocument, {
        input: { sandboxId, body: 'sent while you were away', channel: 'api' },
      });
      expect(sent.ok && sent.data.sendMessage.__typename).toBe('MessagePayload');
      await meanwhile.close();
    } finally {
      await other.close();
    }
    expect(await page.locator('#thread').innerText()).not.toContain('sent while you were away');

    // A new server on the SAME port and database: the page and the workers come back by themselves.
    app = await startFlotilla(configFor(port));
    await app.ready;
    await expect.poll(() => page.locator('#connection').innerText(), { timeout: LIVE_TIMEOUT_MS }).toBe('resumed');
    const missed = page.locator('#thread li[data-sender="USER"]', { hasText: 'sent while you were away' });
    await missed.waitFor({ timeout: LIVE_TIMEOUT_MS });
    // Replayed from the stream's cursor and refetched: shown once, not twice.
    expect(await missed.count()).toBe(1);

    // Live again: a stop asked for now shows up as it happens, and the reconnected worker finishes it.
    const stopped = await api.mutate(StopSandboxDocument, { input: { sandboxId } });
    expect(stopped.ok && stopped.data.stopSandbox.__typename).toBe('SandboxPayload');
    await expect
      .poll(() => page.locator('#sandbox-status').getAttribute('data-status'), { timeout: LIVE_TIMEOUT_MS })
      .toBe('STOPPED');
    await expect.poll(() => page.locator('#agent').innerText()).toMatch(/^last reported: /);
    expect(await page.getByRole('button', { name: 'Restart' }).isDisabled()).toBe(true);
    expect(await page.evaluate(() => '__sameDocument' in window)).toBe(true);
    await shot('sandbox-resumed');
    expectedNoise = null;
  });

  it('fits a phone screen without horizontal scrolling', async () => {
    await page.setViewportSize(PHONE);
    const overflow = () =>
      page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(await overflow()).toBeLessThanOrEqual(0);
    await shot('phone-sandbox');
    await page.getByRole('link', { name: 'demo', exact: true }).click();
    await page.locator('#sandboxes tr[data-sandbox]').first().waitFor();
    expect(await overflow()).toBeLessThanOrEqual(0);
    // Every cell of the boards is on screen, not cut off inside a scrolled table.
    const cellsPastEdge = await page
      .locator('#sandboxes td, #workers td')
      .evaluateAll(
        (cells) =>
          cells.filter((c) => c.getBoundingClientRect().right > document.documentElement.clientWidth + 1).length,
      );
    expect(cellsPastEdge).toBe(0);
    // Each cell says what it is (the column headings are out of sight on a phone).
    const label = await page
      .locator(`#sandboxes tr[data-sandbox="${sandboxName}"] [data-status]`)
      .evaluate((badge) => getComputedStyle(badge.closest('td') as Element, '::before').content);
    expect(label).toBe('"Status"');
    await shot('phone-fleet');
    await page.getByRole('link', { name: 'Tenants' }).click();
    await page.getByRole('link', { name: /Demo fleet/ }).waitFor();
    expect(await overflow()).toBeLessThanOrEqual(0);
    await shot('phone-tenants');
    await page.setViewportSize(DESKTOP);
  });

  it('opens GraphiQL from the dashboard signed in, with the contract operations as examples', async () => {
    const [graphiql] = await Promise.all([
      context.waitForEvent('page'),
      page.getByRole('link', { name: 'GraphiQL' }).click(),
    ]);
    collectErrors(graphiql, 'graphiql');
    const queryEditor = graphiql.locator('.graphiql-query-editor');
    await queryEditor.locator('.view-lines').waitFor({ timeout: LIVE_TIMEOUT_MS });
    await expect.poll(() => textOf(queryEditor.locator('.view-lines'))).toContain('query Viewer');

    await graphiql
      .getByRole('tab', { name: 'Headers' })
      .or(graphiql.getByRole('button', { name: 'Headers' }))
      .first()
      .click();
    const headers = graphiql.locator('.graphiql-editor-tool .view-lines').last();
    await expect.poll(() => textOf(headers)).toContain('Bearer ');

    // Replace the examples with one query; wait until the editor holds exactly it before running.
    const ours = '{ viewer { subject } }';
    await expect
      .poll(async () => {
        await queryEditor.locator('.view-lines').click();
        await queryEditor.locator('.monaco-editor.focused').waitFor();
        await graphiql.keyboard.press('ControlOrMeta+A');
        await graphiql.keyboard.press('Delete');
        await graphiql.keyboard.insertText(ours);
        return (await textOf(queryEditor.locator('.view-lines'))).trim();
      })
      .toBe(ours);
    // GraphiQL takes the edit asynchronously; it lands in the address bar once it has it.
    await expect.poll(() => new URL(graphiql.url()).searchParams.get('query')).toBe(ours);
    await graphiql.locator('.graphiql-execute-button').click();
    await expect
      .poll(() => textOf(graphiql.locator('.graphiql-response')), { timeout: LIVE_TIMEOUT_MS })
      .toContain('"subject": "platform-admin"')
      .catch(async (err: unknown) => {
        await shot('graphiql-failure', graphiql);
        throw err;
      });
    await shot('graphiql', graphiql);

    // A subscription runs over graphql-ws with the same token, and shows events as they happen.
    const subscription = `subscription { tenantEvents(tenantId: "${demo.tenantId}") { type sandbox { name } } }`;
    await expect
      .poll(async () => {
        await queryEditor.locator('.view-lines').click();
        await graphiql.keyboard.press('ControlOrMeta+A');
        await graphiql.keyboard.press('Delete');
        await graphiql.keyboard.insertText(subscription);
        return new URL(graphiql.url()).searchParams.get('query');
      })
      .toBe(subscription);
    await graphiql.locator('.graphiql-execute-button').click();
    // Messages keep coming until one shows up in the stream (it may need a moment to start).
    const demoSandboxes = await api.query(SandboxesDocument, { tenantId: demo.tenantId, first: 1 });
    const target = demoSandboxes.ok ? demoSandboxes.data.sandboxes.edges[0]?.node : undefined;
    expect(target).toBeDefined();
    await expect
      .poll(
        async () => {
          await api.mutate(SendMessageDocument, {
            input: { sandboxId: target?.id ?? '', body: 'hello from the test', channel: 'api' },
          });
          return textOf(graphiql.locator('.graphiql-response'));
        },
        { timeout: LIVE_TIMEOUT_MS, interval: 1_000 },
      )
      .toContain('"type": "MESSAGE_POSTED"');
    await shot('graphiql-subscription', graphiql);
    await graphiql.close();
  });

  it('logged no console errors on any page', () => {
    expect(consoleErrors).toEqual([]);
  });
});
