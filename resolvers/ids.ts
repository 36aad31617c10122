import { isUuid } from '../src/db/ids.js';
import { ValidationError } from '../src/domain/errors.js';

/**
 * The one codec for global ids: base64url("Type:uuid"). Every id argument and input field
 * decodes through `localIdOf`, so a malformed id or one of the wrong type is the same
 * VALIDATION_FAILED error everywhere, while a well-formed id of a missing or invisible object
 * reaches the service and reads as missing.
 */
export function encodeGlobalId(typename: string, id: string): string {
  return Buffer.from(`${typename}:${id}`, 'utf8').toString('base64url');
}

/** `{ typename, id }` of a well-formed global id of any type; null when it is not one. */
export function parseGlobalId(globalId: string): { typename: string; id: string } | null {
  const decoded = Buffer.from(String(globalId), 'base64url').toString('utf8');
  const sep = decoded.indexOf(':');
  const typename = decoded.slice(0, sep);
  const id = decoded.slice(sep + 1);
  if (sep <= 0 || !/^[A-Z][A-Za-z]*$/.test(typename) || !isUuid(id)) return null;
  return { typename, id };
}

/** Decodes a global id of any type (the Relay `node`/`nodes` fields); ValidationError when malformed. */
export function decodeGlobalId(globalId: string, field = 'id'): { typename: string; id: string } {
  const parsed = parseGlobalId(globalId);
  if (!parsed) throw new ValidationError(`"${globalId}" is not a valid id`, field);
  return parsed;
}

/** The local id inside a global id of `typename`; ValidationError when malformed or of another type. */
export function localIdOf(globalId: string, typename: string, field: string): string {
  const { typename: actual, id } = decodeGlobalId(globalId, field);
  if (actual !== typename) throw new ValidationError(`"${globalId}" is not a ${typename} id`, field);
  return id;
}

/** `localIdOf` for an optional id: null and undefined stay absent. */
export function optionalLocalIdOf(globalId: string | null | undefined, typename: string, field: string): string | null {
  return globalId === null || globalId === undefined ? null : localIdOf(globalId, typename, field);
}
