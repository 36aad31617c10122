import {
  CreateSandboxDocument,
  LiveCursorDocument,
  SandboxesDocument,
  type SandboxFieldsFragment,
  TenantDocument,
  TenantEventsDocument,
  type WorkerFieldsFragment,
  WorkersDocument,
} from '../../../src/client/index.js';
import { h } from '../dom.js';
import { ago, cpu, explainError, memory } from '../format.js';
import { session } from '../session.js';

/** Coalesces bursts of events into one refetch. */
const REFRESH_DEBOUNCE_MS = 250;
const FINISHED = ['STOPPED', 'FAILED', 'LOST', 'DELETED'];

/** The fleet board of one tenant: workers and sandboxes, updated live from tenantEvents. */
export async function fleetView(root: HTMLElement, tenantId: string, signal: AbortSignal): Promise<void> {
  const api = session.api();
  const tenantResult = await api.query(TenantDocument, { id: tenantId });
  if (!tenantResult.ok || !tenantResult.data.tenant) {
    root.replaceChildren(
      h(
        'p',
        { class: 'error', role: 'alert' },
        tenantResult.ok ? 'That tenant does not exist or is not yours.' : tenantResult.error.message,
      ),
    );
    return;
  }
  const tenant = tenantResult.data.tenant;
  let workers: WorkerFieldsFragment[] = [];
  let sandboxes: SandboxFieldsFragment[] = [];

  const workersBody = h('tbody');
  const sandboxesBody = h('tbody');
  const usage = h('p', { class: 'muted', id: 'usage' });
  const formError = h('p', { class: 'error', role: 'alert', hidden: true, id: 'create-error' });

  const renderWorkers = () =>
    workersBody.replaceChildren(
      ...(workers.length === 0
        ? [h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No workers registered.'))]
        : workers.map((w) =>
            h(
              'tr',
              { 'data-worker': w.name },
              h('td', { 'data-label': 'Name' }, w.name, w.tenant ? h('span', { class: 'tag' }, 'dedicated') : null),
              h(
                'td',
                { 'data-label': 'Status' },
                h('span', { class: `badge badge-${w.status.toLowerCase()}` }, w.status),
              ),
              h('td', { 'data-label': 'Region' }, w.region ?? '—'),
              h(
                'td',
                { 'data-label': 'Allocated' },
                meter(
                  w.allocated.cpuMillis,
                  w.capacity.cpuMillis,
                  `${cpu(w.allocated.cpuMillis)} of ${cpu(w.capacity.cpuMillis)}`,
                ),
                meter(
                  w.allocated.memoryMb,
                  w.capacity.memoryMb,
                  `${memory(w.allocated.memoryMb)} of ${memory(w.capacity.memoryMb)}`,
                ),
              ),
              h('td', { 'data-label': 'Last heartbeat', title: w.lastHeartbeatAt ?? '' }, ago(w.lastHeartbeatAt)),
            ),
          )),
    );
  const renderSandboxes = () =>
    sandboxesBody.replaceChildren(
      ...(sandboxes.length === 0
        ? [h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No sandboxes yet — create one below.'))]
        : sandboxes.map((s) =>
            h(
              'tr',
              { 'data-sandbox': s.name },
              h(
                'td',
                { 'data-label': 'Name' },
                h('a', { href: `#/s/${encodeURIComponent(s.id)}` }, s.name),
                h('div', { class: 'muted small' }, s.image),
              ),
              h(
                'td',
                { 'data-label': 'Status' },
                h('span', { class: `badge badge-${s.status.toLowerCase()}`, 'data-status': s.status }, s.status),
              ),
              h(
                'td',
                { 'data-label': 'Agent' },
                // A finished sandbox's agent is gone: its last report is history, not a live state.
                !s.agent
                  ? h('span', { class: 'muted' }, '—')
                  : FINISHED.includes(s.status)
                    ? h('span', { class: 'muted' }, `last: ${s.agent.phase.toLowerCase()}`)
                    : h(
                        'span',
                        {},
                        h('span', { class: 'phase' }, s.agent.phase),
                        s.agent.activity ? h('span', { class: 'muted' }, ` ${s.agent.activity}`) : null,
                      ),
              ),
              h('td', { 'data-label': 'Worker' }, s.worker?.name ?? h('span', { class: 'muted' }, 'unplaced')),
              h('td', { 'data-label': 'Age', title: s.createdAt }, ago(s.createdAt)),
            ),
          )),
    );

  async function loadWorkers() {
    const r = await api.query(WorkersDocument, { first: 100 });
    if (r.ok) workers = r.data.workers.edges.map((e) => e.node);
    renderWorkers();
  }
  async function loadSandboxes() {
    const r = await api.query(SandboxesDocument, { tenantId, first: 100 });
    if (r.ok) sandboxes = r.data.sandboxes.edges.map((e) => e.node);
    renderSandboxes();
    const active = sandboxes.filter((s) => !FINISHED.includes(s.status)).length;
    usage.textContent = `${active} active of ${tenant.quota.maxSandboxes} allowed`;
  }

  let timer: ReturnType<typeof setTimeout> | null = null;
  const refreshSoon = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void Promise.all([loadWorkers(), loadSandboxes()]), REFRESH_DEBOUNCE_MS);
  };

  const form = createSandboxForm(async (input) => {
    formError.hidden = true;
    const result = await api.mutate(CreateSandboxDocument, { input: { tenantId, ...input } });
    if (!result.ok) {
      formError.textContent = explainError({ code: result.error.code, message: result.error.message });
      formError.hidden = false;
      return false;
    }
    const outcome = result.data.createSandbox;
    if (outcome.__typename !== 'SandboxPayload') {
      formError.textContent = explainError(outcome as Parameters<typeof explainError>[0]);
      formError.hidden = false;
      return false;
    }
    sandboxes = [...sandboxes.filter((s) => s.id !== outcome.sandbox.id), outcome.sandbox];
    renderSandboxes();
    return true;
  }, formError);

  root.replaceChildren(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Tenants'), ' / ', tenant.name),
    h('h1', {}, tenant.name, ' ', h('span', { class: 'muted' }, tenant.slug)),
    usage,
    h(
      'section',
      { 'aria-labelledby': 'sandboxes-h' },
      h('h2', { id: 'sandboxes-h' }, 'Sandboxes'),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { id: 'sandboxes', class: 'stack' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Name', 'Status', 'Agent', 'Worker', 'Age'].map((c) => h('th', { scope: 'col' }, c)),
            ),
          ),
          sandboxesBody,
        ),
      ),
    ),
    h(
      'section',
      { 'aria-labelledby': 'workers-h' },
      h('h2', { id: 'workers-h' }, 'Workers'),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { id: 'workers', class: 'stack' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Name', 'Status', 'Region', 'Allocated', 'Last heartbeat'].map((c) => h('th', { scope: 'col' }, c)),
            ),
          ),
          workersBody,
        ),
      ),
    ),
    h(
      'section',
      { 'aria-labelledby': 'create-h', class: 'card spaced' },
      h('h2', { id: 'create-h' }, 'New sandbox'),
      form,
    ),
  );
  // Where the live stream starts: taken before the first read, so a change made between that read
  // and the stream's start is replayed to it, never lost.
  const live = await api.query(LiveCursorDocument, {});
  const after = live.ok ? live.data.viewer.liveCursor : null;
  await Promise.all([loadWorkers(), loadSandboxes()]);

  // Live: every tenant event patches or refetches; after a reconnect the stream resumes from its cursor.
  const stream = api.subscribe(
    TenantEventsDocument,
    { tenantId, after },
    {
      cursorOf: (d) => d.tenantEvents.cursor,
      signal,
      onReconnect: () => session.setState('reconnecting'),
      onResumed: () => {
        session.setState('resumed');
        refreshSoon();
      },
    },
  );
  try {
    for await (const { tenantEvents: event } of stream) {
      if (session.state !== 'resumed') session.setState('live');
      const changed = event.sandbox;
      const known = changed && sandboxes.find((s) => s.id === changed.id);
      if (known && changed) {
        Object.assign(known, {
          status: changed.status,
          stateVersion: changed.stateVersion,
          agent: changed.agent ?? known.agent,
        });
        renderSandboxes();
      }
      if (
        !known ||
        event.type === 'SANDBOX_ASSIGNED' ||
        event.type === 'WORKER_STATUS_CHANGED' ||
        event.type === 'SANDBOX_STATUS_CHANGED'
      )
        refreshSoon();
    }
  } catch (err) {
    if (!signal.aborted)
      root.prepend(h('p', { class: 'error', role: 'alert' }, `Live updates stopped: ${(err as Error).message}`));
  }
}

function meter(value: number, max: number, label: string): HTMLElement {
  const pct = max > 0 ? Math.min(100, Math.round((value / max) * 100)) : 0;
  return h(
    'div',
    {
      class: 'meter',
      role: 'meter',
      'aria-valuemin': 0,
      'aria-valuemax': max,
      'aria-valuenow': value,
      'aria-label': label,
      title: label,
    },
    h('span', { style: `width:${pct}%` }),
    h('small', {}, label),
  );
}

interface NewSandbox {
  name: string;
  image: string;
  command: string[];
  resources: { cpuMillis: number; memoryMb: number };
  ttlSeconds?: number | null;
}

function createSandboxForm(submit: (input: NewSandbox) => Promise<boolean>, errorEl: HTMLElement): HTMLFormElement {
  const field = (id: string, label: string, input: HTMLInputElement) =>
    h('div', { class: 'field' }, h('label', { for: id }, label), input);
  const name = h('input', {
    id: 'sb-name',
    name: 'name',
    required: true,
    placeholder: 'research-agent',
    autocomplete: 'off',
  });
  const image = h('input', { id: 'sb-image', name: 'image', required: true, placeholder: 'ghcr.io/acme/agent:1' });
  const command = h('input', { id: 'sb-command', name: 'command', placeholder: 'node agent.js' });
  const cpuIn = h('input', { id: 'sb-cpu', name: 'cpu', type: 'number', min: 1, step: 1, value: 500, required: true });
  const memIn = h('input', {
    id: 'sb-memory',
    name: 'memory',
    type: 'number',
    min: 1,
    step: 1,
    value: 512,
    required: true,
  });
  const ttl = h('input', { id: 'sb-ttl', name: 'ttl', type: 'number', min: 1, step: 1, placeholder: 'no limit' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Create sandbox');
  const form = h(
    'form',
    {
      id: 'create-sandbox',
      class: 'form-grid',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        button.disabled = true;
        try {
          const ok = await submit({
            name: name.value.trim(),
            image: image.value.trim(),
            command: command.value.trim() ? command.value.trim().split(/\s+/) : [],
            resources: { cpuMillis: Number(cpuIn.value), memoryMb: Number(memIn.value) },
            ttlSeconds: ttl.value ? Number(ttl.value) : null,
          });
          if (ok) name.value = '';
        } finally {
          button.disabled = false;
        }
      },
    },
    field('sb-name', 'Name', name),
    field('sb-image', 'Image', image),
    field('sb-command', 'Command', command),
    field('sb-cpu', 'CPU (millicores)', cpuIn),
    field('sb-memory', 'Memory (MiB)', memIn),
    field('sb-ttl', 'Time to live (s)', ttl),
    errorEl,
    h('div', { class: 'actions' }, button),
  );
  return form;
}
