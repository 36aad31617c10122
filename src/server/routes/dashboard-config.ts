import type { DashboardSignIn } from '../../auth/dashboard-sign-in.js';
import { type Route, sendJson } from './route.js';

export const DASHBOARD_CONFIG_PATH = '/dashboard/config.json';

/** What the dashboard learns from the server before it shows the sign-in view. */
export interface DashboardConfig {
  /** OIDC sign-in (public client, PKCE); null: only pasted tokens. */
  signIn: DashboardSignIn | null;
}

/** Public settings only: a client id, an issuer URL and scopes are no secret. */
export function dashboardConfigRoute(config: DashboardConfig): Route {
  const body = JSON.stringify(config);
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: 'method not allowed' });
    res.writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}
