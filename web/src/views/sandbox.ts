import {
  DeleteSandboxDocument,
  LiveCursorDocument,
  MessageAddedDocument,
  type MessageFieldsFragment,
  MessagesDocument,
  RestartSandboxDocument,
  SandboxDocument,
  SandboxEventsDocument,
  type SandboxFieldsFragment,
  SendMessageDocument,
  StopSandboxDocument,
} from '../../../src/client/index.js';
import { h } from '../dom.js';
import { ago, cpu, explainError, memory } from '../format.js';
import { session } from '../session.js';
import { questionPart, showAnswered } from './questions.js';

const FINISHED = ['STOPPED', 'FAILED', 'LOST', 'DELETED'];

/** The tick a message to the agent shows: sent, taken by the worker (✓), written to the process (✓✓), or failed. */
const DELIVERY_MARKS: Record<string, { mark: string; label: string }> = {
  PENDING: { mark: '·', label: 'sent, not yet taken by the worker' },
  DISPATCHED: { mark: '✓', label: 'taken by the worker' },
  DELIVERED: { mark: '✓✓', label: 'delivered to the agent' },
  FAILED: { mark: '✗', label: 'not delivered' },
};

function renderTick(tick: HTMLElement, state: string, error?: string | null): void {
  const known = DELIVERY_MARKS[state] ?? { mark: '?', label: state.toLowerCase() };
  const label = state === 'FAILED' && error ? `${known.label}: ${error}` : known.label;
  tick.dataset.delivery = state;
  tick.textContent = known.mark;
  tick.title = label;
  tick.setAttribute('aria-label', label);
}

/** One sandbox: its state, its live message thread, a box to talk to the agent, stop, restart and delete. */
export async function sandboxView(root: HTMLElement, sandboxId: string, signal: AbortSignal): Promise<void> {
  const api = session.api();
  // Where the live streams start: taken before the sandbox and its messages are read, so a change
  // made between that read and the streams' start is replayed to them, never lost.
  const live = await api.query(LiveCursorDocument, {});
  const after = live.ok ? live.data.viewer.liveCursor : null;
  const loaded = await api.query(SandboxDocument, { id: sandboxId });
  if (!loaded.ok || !loaded.data.sandbox) {
    root.replaceChildren(
      h(
        'p',
        { class: 'error', role: 'alert' },
        loaded.ok ? 'That sandbox does not exist or is not yours.' : loaded.error.message,
      ),
    );
    return;
  }
  let sandbox: SandboxFieldsFragment = loaded.data.sandbox;
  const seen = new Set<string>();
  /** The delivery tick of each message to the agent, by message id. */
  const ticks = new Map<string, HTMLElement>();
  const header = h('div', { class: 'sandbox-head' });
  const thread = h('ol', { class: 'thread', id: 'thread', 'aria-live': 'polite', 'aria-label': 'Messages' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true, id: 'sandbox-error' });

  const act = async (kind: 'stop' | 'restart' | 'delete') => {
    error.hidden = true;
    const input = { input: { sandboxId: sandbox.id } };
    const result =
      kind === 'stop'
        ? await api.mutate(StopSandboxDocument, input)
        : kind === 'restart'
          ? await api.mutate(RestartSandboxDocument, input)
          : await api.mutate(DeleteSandboxDocument, input);
    if (!result.ok) {
      error.textContent = explainError({ code: result.error.code, message: result.error.message });
      error.hidden = false;
      return;
    }
    const outcome =
      'stopSandbox' in result.data
        ? result.data.stopSandbox
        : 'restartSandbox' in result.data
          ? result.data.restartSandbox
          : result.data.deleteSandbox;
    if (outcome.__typename !== 'SandboxPayload') {
      error.textContent = explainError(outcome as Parameters<typeof explainError>[0]);
      error.hidden = false;
      return;
    }
    if (kind === 'delete') location.hash = `#/t/${encodeURIComponent(sandbox.tenant.id)}`;
    else await reload();
  };

  const renderHeader = () =>
    header.replaceChildren(
      h(
        'nav',
        { class: 'crumbs', 'aria-label': 'Breadcrumb' },
        h('a', { href: '#/' }, 'Tenants'),
        ' / ',
        h('a', { href: `#/t/${encodeURIComponent(sandbox.tenant.id)}` }, sandbox.tenant.slug),
        ' / ',
        sandbox.name,
      ),
      h(
        'h1',
        {},
        sandbox.name,
        ' ',
        h(
          'span',
          { class: `badge badge-${sandbox.status.toLowerCase()}`, id: 'sandbox-status', 'data-status': sandbox.status },
          sandbox.status,
        ),
      ),
      h(
        'dl',
        { class: 'stats' },
        h('dt', {}, 'Agent'),
        h(
          'dd',
          { id: 'agent' },
          !sandbox.agent
            ? '—'
            : FINISHED.includes(sandbox.status)
              ? `last reported: ${sandbox.agent.phase.toLowerCase()}`
              : `${sandbox.agent.phase}${sandbox.agent.activity ? ` — ${sandbox.agent.activity}` : ''}`,
        ),
        sandbox.statusReason ? [h('dt', {}, 'Reason'), h('dd', { id: 'status-reason' }, sandbox.statusReason)] : null,
        h('dt', {}, 'Worker'),
        h('dd', {}, sandbox.worker?.name ?? 'unplaced'),
        h('dt', {}, 'Image'),
        h('dd', {}, sandbox.image),
        h('dt', {}, 'Resources'),
        h('dd', {}, `${cpu(sandbox.resources.cpuMillis)}, ${memory(sandbox.resources.memoryMb)}`),
        sandbox.ports.length > 0
          ? [
              h('dt', {}, 'Ports'),
              h(
                'dd',
                { id: 'ports' },
                h(
                  'ul',
                  { class: 'ports' },
                  sandbox.ports.map((p) =>
                    h(
                      'li',
                      {},
                      `${p.name}: `,
                      // The worker's base URL is http or https (checked at registration).
                      p.url
                        ? h('a', { href: p.url, target: '_blank', rel: 'noopener noreferrer' }, p.url)
                        : String(p.port),
                    ),
                  ),
                ),
              ),
            ]
          : null,
        h('dt', {}, 'Created'),
        h('dd', { title: sandbox.createdAt }, ago(sandbox.createdAt)),
        sandbox.exitCode !== null && sandbox.exitCode !== undefined
          ? [h('dt', {}, 'Exit code'), h('dd', {}, String(sandbox.exitCode))]
          : null,
      ),
      h(
        'div',
        { class: 'actions' },
        h(
          'button',
          {
            type: 'button',
            id: 'stop',
            // A restart under way can still be turned into a stop.
            disabled:
              FINISHED.includes(sandbox.status) || (sandbox.status === 'STOPPING' && !sandbox.restartRequestedAt),
            onclick: () => void act('stop'),
          },
          'Stop',
        ),
        h(
          'button',
          {
            type: 'button',
            id: 'restart',
            title: 'Stop the process and start it again on the same worker',
            disabled: sandbox.status !== 'RUNNING',
            onclick: () => void act('restart'),
          },
          'Restart',
        ),
        h(
          'button',
          {
            type: 'button',
            id: 'delete',
            class: 'danger',
            onclick: () => confirm(`Delete sandbox ${sandbox.name}?`) && void act('delete'),
          },
          'Delete',
        ),
      ),
      error,
    );

  const addMessage = (m: MessageFieldsFragment) => {
    if (seen.has(m.id)) {
      // A newer read of it (a catch-up) may know a later delivery state.
      if (m.deliveryState) {
        const tick = ticks.get(m.id);
        if (tick) renderTick(tick, m.deliveryState, m.deliveryError);
      }
      return;
    }
    seen.add(m.id);
    let tick: HTMLElement | null = null;
    if (m.deliveryState) {
      tick = h('span', { class: 'tick', 'data-message': m.id, role: 'img' });
      renderTick(tick, m.deliveryState, m.deliveryError);
      ticks.set(m.id, tick);
    }
    thread.append(
      h(
        'li',
        { class: `msg msg-${m.senderKind.toLowerCase()}`, 'data-sender': m.senderKind, 'data-kind': m.kind },
        h(
          'div',
          { class: 'meta' },
          m.senderKind === 'USER' ? `you · ${m.channel}` : m.senderKind.toLowerCase(),
          ' · ',
          h('time', { datetime: m.createdAt, title: m.createdAt }, ago(m.createdAt)),
          tick ? [' ', tick] : null,
        ),
        h('pre', { class: 'body' }, m.body),
        m.kind === 'QUESTION' && m.question ? questionPart(api, m.question) : null,
      ),
    );
    if (m.kind === 'ANSWER') showAnswered(thread, m);
    thread.scrollTop = thread.scrollHeight;
  };

  async function reload() {
    const r = await api.query(SandboxDocument, { id: sandboxId });
    if (r.ok && r.data.sandbox) {
      sandbox = r.data.sandbox;
      renderHeader();
    }
  }

  const input = h('textarea', {
    id: 'message',
    name: 'message',
    rows: 2,
    placeholder: 'Say something to the agent…',
    required: true,
  });
  const composer = h(
    'form',
    {
      class: 'composer',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const body = input.value;
        if (!body.trim()) return;
        const result = await api.mutate(SendMessageDocument, {
          input: { sandboxId: sandbox.id, body, channel: 'web' },
        });
        if (!result.ok || result.data.sendMessage.__typename !== 'MessagePayload') {
          error.textContent = result.ok
            ? explainError(result.data.sendMessage as Parameters<typeof explainError>[0])
            : result.error.message;
          error.hidden = false;
          return;
        }
        addMessage(result.data.sendMessage.posted);
        input.value = '';
      },
    },
    h('label', { for: 'message', class: 'visually-hidden' }, 'Message'),
    input,
    h('button', { type: 'submit', class: 'primary' }, 'Send'),
  );

  renderHeader();
  root.replaceChildren(header, h('section', { 'aria-label': 'Conversation', class: 'card' }, thread, composer));

  const history = await api.query(MessagesDocument, { sandboxId, first: 100 });
  if (history.ok) for (const edge of history.data.messages.edges) addMessage(edge.node);

  const watchStatus = async () => {
    for await (const { sandboxEvents: event } of api.subscribe(
      SandboxEventsDocument,
      { sandboxId, after },
      {
        cursorOf: (d) => d.sandboxEvents.cursor,
        signal,
        onReconnect: () => session.setState('reconnecting'),
        onResumed: () => {
          session.setState('resumed');
          void reload();
        },
      },
    )) {
      session.setState(session.state === 'resumed' ? 'resumed' : 'live');
      if (event.sandbox) {
        sandbox = {
          ...sandbox,
          status: event.sandbox.status,
          stateVersion: event.sandbox.stateVersion,
          agent: event.sandbox.agent ?? sandbox.agent,
          ...(event.type === 'SANDBOX_STATUS_CHANGED' ? statusDetails(event.data, event.occurredAt) : {}),
        };
        renderHeader();
      }
      if (event.type === 'SANDBOX_ASSIGNED' || event.type === 'LEASE_CHANGED') void reload();
      if ((event.type === 'MESSAGE_DELIVERED' || event.type === 'MESSAGE_DELIVERY_CHANGED') && event.message) {
        const tick = ticks.get(event.message.id);
        const to = (event.data as { to?: unknown } | null)?.to;
        const error = (event.data as { error?: unknown } | null)?.error;
        if (tick && typeof to === 'string') renderTick(tick, to, typeof error === 'string' ? error : null);
      }
    }
  };
  const watchMessages = async () => {
    for await (const { messageAdded } of api.subscribe(
      MessageAddedDocument,
      { sandboxId, after },
      {
        cursorOf: (d) => d.messageAdded.eventCursor,
        signal,
        onReconnect: () => session.setState('reconnecting'),
        onResumed: () => void catchUp(),
      },
    ))
      addMessage(messageAdded);
  };
  // After a reconnect, fetch the thread again: anything missed while offline shows up, duplicates are skipped.
  const catchUp = async () => {
    const again = await api.query(MessagesDocument, { sandboxId, first: 100 });
    if (again.ok) for (const edge of again.data.messages.edges) addMessage(edge.node);
  };
  await Promise.all([watchStatus(), watchMessages()]).catch((err: Error) => {
    if (!signal.aborted)
      root.prepend(h('p', { class: 'error', role: 'alert' }, `Live updates stopped: ${err.message}`));
  });
}

/** What a SANDBOX_STATUS_CHANGED event says beyond the status: its reason, and whether it is a restart's stop. */
function statusDetails(
  data: unknown,
  occurredAt: string,
): Pick<SandboxFieldsFragment, 'statusReason' | 'restartRequestedAt'> {
  const { reason, restart } = (data ?? {}) as { reason?: unknown; restart?: unknown };
  return {
    statusReason: typeof reason === 'string' ? reason : null,
    restartRequestedAt: restart === true ? occurredAt : null,
  };
}
