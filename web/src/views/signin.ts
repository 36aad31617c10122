import { ViewerDocument } from '../../../src/client/index.js';
import { h } from '../dom.js';
import { explainError } from '../format.js';
import { type SignInConfig, startSignIn } from '../oidc.js';
import { session } from '../session.js';

/**
 * Sign in through the organisation's identity provider (when the server names one), or by
 * pasting a token; a pasted token is checked against the server before it is kept.
 */
export function signInView(
  root: HTMLElement,
  onSignedIn: () => void,
  options: { oidc?: SignInConfig | null; notice?: string | null } = {},
): void {
  const error = h('p', { class: 'error', role: 'alert', hidden: !options.notice }, options.notice ?? '');
  const { oidc } = options;
  const provider = oidc
    ? h(
        'div',
        { class: 'card narrow' },
        h('h1', {}, 'Sign in'),
        h('p', { class: 'muted' }, `With your ${oidc.name} account. The sign-in is kept in this tab only.`),
        h(
          'button',
          {
            type: 'button',
            class: 'primary',
            id: 'oidc-sign-in',
            onclick: () => {
              error.hidden = true;
              startSignIn(oidc).catch((err: Error) => {
                error.textContent = `Could not reach ${oidc.name}: ${err.message}`;
                error.hidden = false;
              });
            },
          },
          `Sign in with ${oidc.name}`,
        ),
        error,
      )
    : null;
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
    oidc ? h('h2', {}, 'Or paste a token') : h('h1', {}, 'Sign in'),
    h(
      'p',
      { class: 'muted' },
      'Paste a Flotilla token: the platform-admin token printed at first start (also in data/admin.token), or an API token of your tenant. It stays in this tab only.',
    ),
    h('label', { for: 'token' }, 'Token'),
    input,
    provider ? null : error,
    h('button', { type: 'submit', class: 'primary' }, provider ? 'Sign in with the token' : 'Sign in'),
  );
  root.replaceChildren(...(provider ? [provider, form] : [form]));
  if (!provider) input.focus();
}
