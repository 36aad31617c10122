import type { SigningKeys } from '../../auth/keys.js';
import { type Route, sendJson } from './route.js';

export const JWKS_PATH = '/.well-known/jwks.json';

/** The public keys of the server's own tokens, for other services that verify them. */
export function jwksRoute(keys: () => SigningKeys | null): Route {
  return (_req, res) => {
    const loaded = keys();
    if (!loaded) return sendJson(res, 503, { error: 'keys are not loaded yet' });
    sendJson(res, 200, loaded.jwks(), { 'cache-control': 'max-age=60' });
  };
}
