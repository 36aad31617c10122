#!/usr/bin/env node
// Runs the compiled CLI from `npm run build` when it is current (built after the last change to
// any source file: `npm ci` builds it), which starts about twice as fast; in a checkout whose
// sources changed since, it runs the TypeScript source through tsx, never a stale build.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const compiled = new URL('../dist/src/cli.js', import.meta.url);
const source = new URL('../src/cli.ts', import.meta.url);

/** The newest modification time of a file under `dir` (0 when it does not exist). */
function newestUnder(dir) {
  let newest = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    const path = `${dir}/${entry.name}`;
    const mtime = entry.isDirectory() ? newestUnder(path) : statSync(path).mtimeMs;
    if (mtime > newest) newest = mtime;
  }
  return newest;
}

function buildIsCurrent() {
  const built = fileURLToPath(compiled);
  if (!existsSync(built)) return false;
  const sources = Math.max(newestUnder(`${root}src`), newestUnder(`${root}resolvers`));
  return statSync(built).mtimeMs >= sources;
}

if (existsSync(fileURLToPath(source)) && !buildIsCurrent()) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else {
  await import(compiled.href);
}
