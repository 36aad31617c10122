import './styles.css';
import { h } from './dom.js';
import { type ConnectionState, session } from './session.js';
import { fleetView } from './views/fleet.js';
import { sandboxView } from './views/sandbox.js';
import { signInView } from './views/signin.js';
import { tenantsView } from './views/tenants.js';

const app = document.getElementById('app') as HTMLElement;
const pill = document.getElementById('connection') as HTMLElement;
const signOut = document.getElementById('sign-out') as HTMLButtonElement;

const STATE_WORDS: Record<ConnectionState, string> = {
  offline: 'offline',
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  resumed: 'resumed',
};

session.onState((state) => {
  pill.textContent = STATE_WORDS[state];
  pill.className = `pill pill-${state}`;
});

signOut.addEventListener('click', () => {
  session.signOut();
  location.hash = '#/';
  route();
});

let current: AbortController | null = null;

/** Hash routes: #/ tenants, #/t/<tenantId> fleet board, #/s/<sandboxId> sandbox. */
function route(): void {
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  signOut.hidden = !session.token;
  if (!session.token) {
    signInView(app, () => route());
    return;
  }
  const [, kind, id] = location.hash.replace(/^#/, '').split('/');
  const view =
    kind === 't' && id
      ? fleetView(app, decodeURIComponent(id), signal)
      : kind === 's' && id
        ? sandboxView(app, decodeURIComponent(id), signal)
        : tenantsView(app);
  view.catch((err: Error) => {
    if (!signal.aborted) app.replaceChildren(h('p', { class: 'error', role: 'alert' }, err.message));
  });
  app.focus({ preventScroll: true });
}

window.addEventListener('hashchange', route);
route();
