import { createReadStream, existsSync, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';
import { packagePath } from '../../kernel/paths.js';

/** Where `npm run build` puts the dashboard (vite build of web/). */
export const DASHBOARD_DIR = packagePath('dist', 'web');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.woff2': 'font/woff2',
};

const NOT_BUILT = `<!doctype html><meta charset="utf-8"><title>Flotilla</title>
<body style="font-family:system-ui;max-width:40rem;margin:4rem auto;line-height:1.5">
<h1>Flotilla</h1><p>The dashboard has not been built yet: run <code>npm run build</code> (it runs on <code>npm ci</code>).</p>
<p>GraphiQL is at <a href="/graphql">/graphql</a>.</p></body>`;

/** Serves the built dashboard: files under DASHBOARD_DIR, and index.html for `/`. */
export function serveDashboard(
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  root: string = DASHBOARD_DIR,
): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const relative = path === '/' ? 'index.html' : decodeURIComponent(path.slice(1));
  const file = normalize(join(root, relative));
  if (!file.startsWith(root + sep)) return false;
  if (!existsSync(file) || !statSync(file).isFile()) {
    if (path !== '/') return false;
    res.writeHead(200, { 'content-type': TYPES['.html'] });
    res.end(NOT_BUILT);
    return true;
  }
  const immutable = relative.startsWith('assets/');
  res.writeHead(200, {
    'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
    'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
    'x-content-type-options': 'nosniff',
  });
  if (req.method === 'HEAD') res.end();
  else createReadStream(file).pipe(res);
  return true;
}
