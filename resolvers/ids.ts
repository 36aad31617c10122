/**
 * Global ids of the schema (base64url "Type:uuid", see builder.ts). An id of the wrong type
 * or a malformed one decodes to a value no row has, so it reads exactly like a missing id.
 */
export const NO_SUCH_ID = 'none';

export function encodeGlobalId(typename: string, id: string): string {
  return Buffer.from(`${typename}:${id}`, 'utf8').toString('base64url');
}

export function localIdOf(globalId: string | null | undefined, typename: string): string {
  if (!globalId) return NO_SUCH_ID;
  const decoded = Buffer.from(String(globalId), 'base64url').toString('utf8');
  const sep = decoded.indexOf(':');
  if (sep <= 0 || decoded.slice(0, sep) !== typename) return NO_SUCH_ID;
  return decoded.slice(sep + 1) || NO_SUCH_ID;
}
