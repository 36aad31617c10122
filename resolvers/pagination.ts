import type { ArgBuilder, ObjectRef } from '@pothos/core';
import { ValidationError } from '../src/domain/errors.js';
import type { Page } from '../src/domain/pagination.js';
import { cursorOfEvent, decodeEventCursor, type LogPosition } from '../src/events/reader.js';
import { builder } from './builder.js';

type Types = typeof builder extends PothosSchemaTypes.SchemaBuilder<infer T> ? T : never;

/** How a kind of cursor is made from an item, and which key (where a page continues) it decodes to. */
export interface CursorCodec<T, Key> {
  encode(node: T): string;
  decode(cursor: string): Key;
}

/** Connection cursors are opaque to clients: base64url of "c:" and the item's id. */
export function encodeConnectionCursor(id: string): string {
  return Buffer.from(`c:${id}`, 'utf8').toString('base64url');
}

export function decodeConnectionCursor(cursor: string): string {
  const decoded = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!decoded.startsWith('c:')) throw new ValidationError('after is not a valid cursor', 'after');
  return decoded.slice(2);
}

export const connectionCursor: CursorCodec<{ id: string }, string> = {
  encode: (node) => encodeConnectionCursor(node.id),
  decode: decodeConnectionCursor,
};
/**
 * The event log's own cursor (src/events/reader.ts), which subscriptions also take as `after`:
 * for events, and for messages (the position of the event that posted each).
 */
export const eventCursor: CursorCodec<{ txId: string; id: string }, LogPosition> = {
  encode: cursorOfEvent,
  decode: decodeEventCursor,
};

export interface ConnectionResult<T> {
  edges: { cursor: string; node: T }[];
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor: string | null; endCursor: string | null };
  totalCount: () => Promise<number>;
}

/** The arguments every paged field takes. */
export function pageArgs(arg: ArgBuilder<Types>) {
  return { first: arg.int({ required: false }), after: arg.string({ required: false }) };
}

/**
 * The one way a paged field answers: decodes `after` with the field's kind of cursor, asks the
 * service for that page and shapes it as a connection.
 */
export async function connection<T extends { id: string }, Key = string>(
  args: { first?: number | null; after?: string | null },
  load: (page: { first?: number | null; after: Key | null }) => Promise<Page<T>>,
  cursor: CursorCodec<T, Key> = connectionCursor as unknown as CursorCodec<T, Key>,
): Promise<ConnectionResult<T>> {
  const hadCursor = args.after !== null && args.after !== undefined;
  const page = await load({ first: args.first, after: hadCursor ? cursor.decode(args.after as string) : null });
  const edges = page.items.map((node) => ({ cursor: cursor.encode(node), node }));
  return {
    edges,
    pageInfo: {
      hasNextPage: page.hasNextPage,
      hasPreviousPage: hadCursor,
      startCursor: edges[0]?.cursor ?? null,
      endCursor: edges.at(-1)?.cursor ?? null,
    },
    totalCount: page.totalCount,
  };
}

/** `<Name>Connection` of a node type, with the `totalCount` every connection of the schema has. */
export function connectionType<Shape>(name: string, type: ObjectRef<Types, Shape>) {
  return builder.connectionObject({
    type,
    name,
    fields: (t) => ({
      totalCount: t.int({ resolve: (conn) => (conn as unknown as ConnectionResult<Shape>).totalCount() }),
    }),
  });
}
