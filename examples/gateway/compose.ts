/**
 * Composes the Flotilla supergraph from subgraph SDLs with @theguild/federation-composition.
 * Used by `npm run gateway`, the composition test and the federation end-to-end test.
 */
import { composeServices, compositionHasErrors } from '@theguild/federation-composition';
import { parse } from 'graphql';

export const FLOTILLA_SUBGRAPH = 'flotilla';
export const USAGE_SUBGRAPH = 'usage';

export interface SubgraphSource {
  name: string;
  /** Where the gateway reaches the subgraph over HTTP. */
  url: string;
  sdl: string;
}

export class CompositionError extends Error {
  constructor(readonly errors: readonly string[]) {
    super(`supergraph composition failed:\n${errors.map((e) => `  - ${e}`).join('\n')}`);
  }
}

/** The supergraph SDL of the given subgraphs; throws CompositionError on any composition error. */
export function composeSupergraph(subgraphs: readonly SubgraphSource[]): { supergraphSdl: string; publicSdl: string } {
  const result = composeServices(subgraphs.map((s) => ({ name: s.name, url: s.url, typeDefs: parse(s.sdl) })));
  if (compositionHasErrors(result)) throw new CompositionError(result.errors.map((e) => e.message));
  return { supergraphSdl: result.supergraphSdl, publicSdl: result.publicSdl };
}
