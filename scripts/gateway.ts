/**
 * `npm run gateway`: Flotilla (SQLite by default, FLOTILLA_* as usual), the example usage
 * subgraph and Hive Gateway composing both, on one machine. Ports: GATEWAY_PORT (4000),
 * FLOTILLA_PORT (4001), USAGE_PORT (4002). Ctrl-C stops all three.
 */
import { startFederation } from '../examples/gateway/launch.js';

const DEFAULT_PORTS = { gateway: 4000, flotilla: 4001, usage: 4002 };

function port(name: string, fallback: number): number {
  const raw = process.env[name];
  const value = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65_535) {
    console.error(`${name} must be a port number, got "${raw}"`);
    process.exit(2);
  }
  return value;
}

const federation = await startFederation({
  gatewayPort: port('GATEWAY_PORT', DEFAULT_PORTS.gateway),
  flotillaPort: port('FLOTILLA_PORT', DEFAULT_PORTS.flotilla),
  usagePort: port('USAGE_PORT', DEFAULT_PORTS.usage),
  host: process.env.GATEWAY_HOST ?? '127.0.0.1',
  onOutput: process.env.GATEWAY_VERBOSE ? (line) => console.log(line) : undefined,
});

console.log(
  [
    `Gateway (supergraph):   ${federation.gatewayUrl}`,
    `Flotilla subgraph:      ${federation.flotillaUrl}`,
    `Usage subgraph:         ${federation.usageUrl}`,
    `Supergraph SDL:         ${federation.supergraphFile}`,
    federation.adminToken
      ? `Platform-admin token (first start, shown once): ${federation.adminToken}`
      : 'Send "Authorization: Bearer <token>" (e.g. from `npm run flotilla -- token admin`).',
    'Ctrl-C stops all three.',
  ].join('\n'),
);

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  federation.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
