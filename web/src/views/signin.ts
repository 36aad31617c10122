import { ViewerDocument } from '../../../src/client/index.js';
import { h } from '../dom.js';
import { explainError } from '../format.js';
import { session } from '../session.js';

/** Sign in by pasting a token; it is checked against the server before it is kept. */
export function signInView(root: HTMLElement, onSignedIn: () => void): void {
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const input = h('textarea', {
    id: 'token',
    name: 'token',
    rows: 4,
    required: true,
    spellcheck: 'false',
    autocomplete: 'off',
    placeholder: 'eyJhbGciOi…',
  });
  const form = h(
    'form',
    {
      class: 'card narrow',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        error.hidden = true;
        const token = input.value.trim();
        if (!token) return;
        session.signIn(token);
        const result = await session.api().query(ViewerDocument);
        if (!result.ok) {
          session.signOut();
          error.textContent = explainError({ code: result.error.code, message: result.error.message });
          error.hidden = false;
          return;
        }
        onSignedIn();
      },
    },
    h('h1', {}, 'Sign in'),
    h(
      'p',
      { class: 'muted' },
      'Paste a Flotilla token: the platform-admin token printed at first start (also in data/admin.token), or an API token of your tenant. It stays in this tab only.',
    ),
    h('label', { for: 'token' }, 'Token'),
    input,
    error,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  );
  root.replaceChildren(form);
  input.focus();
}
