import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { type DefinitionNode, type FragmentDefinitionNode, Kind, parse, print, visit } from 'graphql';
import type { GraphiQLOptions } from 'graphql-yoga';
import { packagePath } from '../kernel/paths.js';

/** The contract's operations (the same documents the SDK is generated from). */
export const OPERATIONS_DIR = packagePath('schema', 'operations');

const FIRST_FILE = 'viewer.graphql';
/** Where GraphiQL keeps its Headers pane (namespace `graphiql`); the dashboard writes it too. */
const GRAPHIQL_HEADERS_KEY = 'graphiql:headers';

const INTRO = `# Flotilla GraphiQL
#
# Below are the operations of schema/operations (what the dashboard and the SDK use).
# Press the run button and pick one; variables go in the Variables pane.
# The Authorization header is filled in when you open GraphiQL from the dashboard;
# otherwise add {"Authorization": "Bearer <token>"} in the Headers pane.
# Subscriptions run over graphql-ws.

`;

/**
 * One document with every operation of schema/operations followed by the fragments they use,
 * offered as GraphiQL's default query so each operation is an example one click away.
 * Without the operations folder (an install that ships only dist/) it is a minimal query.
 */
export function exampleOperations(dir: string = OPERATIONS_DIR): string {
  const fallback = `${INTRO}query Viewer {\n  viewer {\n    subject\n    platformAdmin\n  }\n}\n`;
  if (!existsSync(dir)) return fallback;
  const definitions: DefinitionNode[] = readdirSync(dir)
    .filter((f) => f.endsWith('.graphql'))
    // The viewer query first: the one to try before anything else.
    .sort((a, b) => Number(b === FIRST_FILE) - Number(a === FIRST_FILE) || a.localeCompare(b))
    .flatMap((f) => parse(readFileSync(join(dir, f), 'utf8')).definitions);
  const fragments = new Map(
    definitions
      .filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION)
      .map((d) => [d.name.value, d]),
  );
  const operations = definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
  if (operations.length === 0) return fallback;
  // Only fragments some operation reaches: unused ones would make the document invalid.
  const used = new Set<string>();
  const pending: DefinitionNode[] = [...operations];
  while (pending.length > 0) {
    const node = pending.pop();
    if (!node) break;
    visit(node, {
      FragmentSpread(spread) {
        const name = spread.name.value;
        const fragment = fragments.get(name);
        if (!used.has(name) && fragment) {
          used.add(name);
          pending.push(fragment);
        }
      },
    });
  }
  const usedFragments = [...fragments.values()].filter((f) => used.has(f.name.value));
  return `${INTRO + [...operations, ...usedFragments].map((d) => print(d)).join('\n\n')}\n`;
}

/**
 * GraphiQL with its assets inlined from @graphql-yoga/render-graphiql instead of a CDN, so it
 * works offline and behind firewalls. The page is large (~9 MB) and the same for every request
 * with the same options: it is rendered once per options.
 */
export function localGraphiQL(): (options: GraphiQLOptions) => string {
  const pages = new Map<string, string>();
  return (options) => {
    const key = JSON.stringify(options);
    let page = pages.get(key);
    if (page === undefined) {
      page = withSocketHeaders(renderGraphiQL(options), key);
      pages.set(key, page);
    }
    return page;
  };
}

/**
 * GraphiQL sends the Headers pane with each HTTP request but not when it opens its graphql-ws
 * socket, which this server authenticates in `connection_init`. The page reads the headers
 * GraphiQL keeps in localStorage and offers them as the socket's connection parameters, so
 * subscriptions run with the same token as queries.
 */
function withSocketHeaders(page: string, optionsJson: string): string {
  const at = page.lastIndexOf(optionsJson);
  if (at < 0) return page;
  const connectionParams = `connectionParams: () => { try { return JSON.parse(localStorage.getItem(${JSON.stringify(GRAPHIQL_HEADERS_KEY)}) || '{}'); } catch { return {}; } }`;
  return `${page.slice(0, at)}Object.assign(${optionsJson}, { ${connectionParams} })${page.slice(at + optionsJson.length)}`;
}
