import './styles.css';
import { h } from './dom.js';
import { completeSignIn, endSessionUrl, isCallback, renewAt, type SignInConfig, signInConfig } from './oidc.js';
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

/** The server's OIDC sign-in settings (null: pasted tokens only), and a word for the sign-in view. */
let oidc: SignInConfig | null = null;
let notice: string | null = null;

const signInEnded = (reason: string) => {
  notice = reason;
  route();
};

signOut.addEventListener('click', async () => {
  const tokens = session.oidc;
  session.signOut();
  // Signed in through the provider: end its session too, when it offers that (it sends the browser back).
  const end = tokens && oidc ? await endSessionUrl(oidc, tokens.idToken) : null;
  if (end) {
    location.assign(end);
    return;
  }
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
    const shown = notice;
    notice = null;
    signInView(app, () => route(), { oidc, notice: shown });
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

/** Loads the sign-in settings and, coming back from the provider, finishes its sign-in first. */
async function start(): Promise<void> {
  oidc = await signInConfig();
  if (oidc && isCallback()) {
    try {
      const { tokens, hash } = await completeSignIn(oidc);
      session.signInWithOidc(tokens, oidc, signInEnded);
      history.replaceState(null, '', `${location.pathname}${hash}`);
    } catch (err) {
      session.signOut();
      notice = (err as Error).message;
    }
  } else if (oidc && session.oidc) {
    session.scheduleRenewal(oidc, signInEnded);
  }
  window.addEventListener('hashchange', route);
  // A background tab's timers may run late: renew at once when it shows again, if it is due.
  document.addEventListener('visibilitychange', () => {
    const tokens = session.oidc;
    if (oidc && tokens && document.visibilityState === 'visible' && Date.now() >= renewAt(tokens))
      session.scheduleRenewal(oidc, signInEnded);
  });
  route();
}

void start();
