import type { Database } from '../../db/database.js';
import type { Metrics } from '../metrics.js';
import { type Route, sendJson } from './route.js';

/** Further readiness beyond the database (e.g. the event LISTEN connection); not ready with a reason. */
export type ReadinessCheck = () => { ok: boolean; reason?: string };

/** `/healthz`: the process is up. */
export const healthRoute: Route = (_req, res) => sendJson(res, 200, { status: 'ok' });

/** `/readyz`: the database answers and every further check passes. */
export function readinessRoute(db: Database, metrics: Metrics, readiness?: ReadinessCheck): Route {
  return async (_req, res) => {
    const dbCheck = await db.check();
    metrics.databaseReady.set(dbCheck.ok ? 1 : 0);
    const check = dbCheck.ok && readiness ? readiness() : dbCheck;
    sendJson(res, check.ok ? 200 : 503, check.ok ? { status: 'ready' } : { status: 'not ready', reason: check.reason });
  };
}
