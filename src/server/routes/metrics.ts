import type { Metrics } from '../metrics.js';
import type { Route } from './route.js';

/** `/metrics`: Prometheus text format. */
export function metricsRoute(metrics: Metrics): Route {
  return async (_req, res) => {
    res.writeHead(200, { 'content-type': metrics.registry.contentType });
    res.end(await metrics.registry.metrics());
  };
}
