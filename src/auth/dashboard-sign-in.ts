import type { Config } from '../config/index.js';

/**
 * What the dashboard needs to sign people in through an OIDC issuer (authorization code with
 * PKCE, as a public client: no secret ever reaches the browser). Served at /dashboard/config.json.
 */
export interface DashboardSignIn {
  issuer: string;
  clientId: string;
  /** Space-separated, openid among them. */
  scopes: string;
  /** For the "Sign in with …" button. */
  name: string;
}

/** The dashboard's sign-in settings, or null when only pasted tokens are taken. */
export function dashboardSignIn(config: Config): DashboardSignIn | null {
  const clientId = config.oidcDashboardClientId;
  if (clientId === undefined) return null;
  const wanted = config.oidcDashboardIssuer;
  const issuer = (wanted ? config.oidcIssuers.find((i) => i.issuer === wanted) : config.oidcIssuers[0])?.issuer;
  // loadConfig refuses a client id without exactly one matching issuer; a hand-built config may not.
  if (issuer === undefined) throw new Error('FLOTILLA_OIDC_DASHBOARD_CLIENT_ID needs a matching OIDC issuer');
  return { issuer, clientId, scopes: config.oidcDashboardScopes, name: config.oidcDashboardName ?? hostOf(issuer) };
}

/**
 * The audiences the issuer's tokens may carry: its configured audience, and for the issuer the
 * dashboard signs in with, the dashboard's client id (the ID token the dashboard sends is
 * addressed to it).
 */
export function acceptedAudiences(config: Config, issuer: string, audience: string): string[] {
  const signIn = dashboardSignIn(config);
  return signIn && signIn.issuer === issuer && signIn.clientId !== audience ? [audience, signIn.clientId] : [audience];
}

function hostOf(issuer: string): string {
  try {
    return new URL(issuer).host;
  } catch {
    return issuer;
  }
}
