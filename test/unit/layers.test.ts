import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const src = join(root, 'src');

/**
 * Imports that would run against the data flow (docs/architecture.md, "Layers"). A layer is a
 * top-level folder of src/ (or `resolvers` outside it); each entry lists what it must not import.
 */
const FORBIDDEN: Record<string, readonly string[]> = {
  kernel: [
    'config',
    'db',
    'domain',
    'events',
    'auth',
    'server',
    'worker',
    'client',
    'resolvers',
    'ops',
    'cli.ts',
    'demo.ts',
  ],
  db: ['domain', 'events', 'auth', 'server', 'worker', 'resolvers', 'ops'],
  events: ['domain', 'server', 'worker', 'resolvers', 'ops'],
  auth: ['domain', 'events', 'server', 'worker', 'resolvers', 'ops'],
  domain: ['server', 'worker', 'resolvers', 'ops'],
  server: ['worker', 'ops'],
  worker: ['db', 'domain', 'events', 'auth', 'server', 'resolvers', 'ops'],
  client: ['config', 'db', 'domain', 'events', 'auth', 'server', 'worker', 'resolvers', 'ops'],
  ops: ['server', 'worker', 'resolvers', 'client'],
};

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'generated' || entry.name === 'migrations' ? [] : sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** The layer of a file: its top-level folder under src/ (a file directly in src/ is its own layer). */
function layerOf(file: string): string {
  const rel = relative(src, file);
  const top = rel.startsWith('..') ? relative(root, file).split(/[\\/]/)[0] : rel.split(/[\\/]/)[0];
  // An import names the compiled file (cli.js); the layer is the source file (cli.ts).
  return top.replace(/\.js$/, '.ts');
}

/** Every relative import of a file, as `{ layer, specifier }`. */
function importsOf(file: string): { layer: string; specifier: string }[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(IMPORT)]
    .map((m) => m[1])
    .filter((specifier) => specifier.startsWith('.'))
    .map((specifier) => ({ layer: layerOf(resolve(dirname(file), specifier)), specifier }));
}

describe('layers import one way', () => {
  const files = sourceFiles(src);

  it('finds the source files and their imports', () => {
    expect(files.length).toBeGreaterThan(40);
    expect(importsOf(join(src, 'db', 'database.ts')).map((i) => i.layer)).toContain('kernel');
  });

  it('reads multi-line, type-only, re-export and dynamic imports', () => {
    const seen = new Set(files.flatMap((f) => importsOf(f).map((i) => `${layerOf(f)}->${i.layer}`)));
    // cli.ts imports the worker dynamically; the worker agent's client import spans lines.
    expect(seen).toContain('cli.ts->worker');
    expect(seen).toContain('worker->client');
  });

  for (const [layer, forbidden] of Object.entries(FORBIDDEN)) {
    it(`${layer} imports nothing from ${forbidden.join(', ')}`, () => {
      const offending = files
        .filter((f) => layerOf(f) === layer)
        .flatMap((f) =>
          importsOf(f)
            .filter((i) => forbidden.includes(i.layer))
            .map((i) => `${relative(root, f)} imports ${i.specifier}`),
        );
      expect(offending).toEqual([]);
    });
  }
});
