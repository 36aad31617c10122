import { type GraphQLSchema, graphql } from 'graphql';

/**
 * The subgraph SDL exactly as a federation gateway reads it: the `_service { sdl }` answer,
 * including the @link import and every @key.
 */
export async function subgraphSdl(schema: GraphQLSchema): Promise<string> {
  const result = await graphql({ schema, source: '{ _service { sdl } }' });
  const service = result.data?._service as { sdl?: unknown } | undefined;
  if (result.errors?.length || typeof service?.sdl !== 'string') {
    throw new Error(`the schema does not serve _service.sdl: ${JSON.stringify(result.errors ?? null)}`);
  }
  return service.sdl;
}
