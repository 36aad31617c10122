/**
 * The Flotilla SDK: a small typed client over the generated documents (./generated/graphql.ts).
 *
 *   const client = createClient({ url: 'http://localhost:4000/graphql', token });
 *   const res = await client.query(TenantsDocument, { first: 10 });
 *   if (res.ok) console.log(res.data.tenants.totalCount);
 *
 * Results are discriminated (`ok`), never thrown; network failures are retried with backoff;
 * subscriptions reconnect by themselves and resume from the last cursor they delivered (or, before
 * their first event, from where the server started them), with no gap and no duplicate.
 */
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import {
  type DocumentNode,
  type FieldNode,
  Kind,
  type OperationDefinitionNode,
  print,
  type SelectionSetNode,
} from 'graphql';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';
import {
  LiveCursorDocument,
  type LiveCursorQuery,
  type SandboxStatus,
  WaitForSandboxDocument,
  type WaitForSandboxQuery,
} from './generated/graphql.js';
import { readServerSentEvents } from './sse.js';

export * from './generated/graphql.js';

export interface ClientOptions {
  /** The GraphQL endpoint, e.g. http://localhost:4000/graphql (ws:// is derived from it). */
  url: string;
  /** A bearer token (or a function returning the current one). */
  token: string | (() => string);
  /** Subscription transport: graphql-ws (default) or Server-Sent Events. */
  transport?: 'ws' | 'sse';
  /** How many times a request is retried after a network error (default 3). */
  retries?: number;
  /** First retry delay in ms; doubles each time up to `maxBackoffMs` (defaults 200 / 5000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** A WebSocket implementation for Node versions without a global one (e.g. the `ws` package). */
  webSocketImpl?: unknown;
  /** Told when the subscription socket connects or closes (e.g. to show "live" / "reconnecting"). */
  onConnectionChange?: (state: 'connecting' | 'connected' | 'closed') => void;
}

/** What went wrong with a request as a whole (typed mutation errors arrive in `data`). */
export interface ClientError {
  kind: 'network' | 'http' | 'graphql';
  message: string;
  /** `extensions.code` of the first GraphQL error, e.g. UNAUTHENTICATED; or the HTTP status. */
  code: string;
  status?: number;
  errors?: { message: string; extensions?: Record<string, unknown>; path?: readonly (string | number)[] }[];
}

export type Result<T> = { ok: true; data: T } | { ok: false; error: ClientError };

type Vars = Record<string, unknown>;

/** An object of a typed-error union: a payload or one of the contract's errors. */
export interface TypedUnionMember {
  __typename?: string;
  code?: string;
  message?: string;
}

/**
 * Splits a mutation's union result: the payload (`__typename` ending in "Payload") or the
 * typed error with its `code` and `message`.
 */
export function unwrapPayload<T extends TypedUnionMember>(
  value: T,
):
  | { ok: true; payload: Extract<T, { __typename?: `${string}Payload` }> }
  | { ok: false; error: { typename: string; code: string; message: string } } {
  const typename = value.__typename ?? '';
  if (typename.endsWith('Payload'))
    return { ok: true, payload: value as Extract<T, { __typename?: `${string}Payload` }> };
  return { ok: false, error: { typename, code: value.code ?? 'UNKNOWN', message: value.message ?? typename } };
}

export interface SubscribeOptions<T> {
  /**
   * Picks the resumable cursor out of each event, so a reconnect resumes right after it. By
   * default the event's own cursor (`cursor`, or a message's `eventCursor`), which the SDK adds
   * to the selection when the document does not ask for it.
   */
  cursorOf?: (data: T) => string | null | undefined;
  /** The variable that carries the cursor (default: the one the root field's `after` takes, else "after", added when missing). */
  cursorVariable?: string;
  /** Called when the stream reconnects (e.g. to show "reconnecting…"). */
  onReconnect?: (attempt: number, error: unknown) => void;
  /** Called once the stream is live again after a reconnect. */
  onResumed?: () => void;
  signal?: AbortSignal;
}

/** The longest one `waitForSandbox` request may wait (the server's limit). */
export const WAIT_REQUEST_MAX_SECONDS = 300;
/**
 * How long the SDK lets one `waitForSandbox` request wait by default before asking again: below
 * the 60 s read timeout common proxies default to (and far below fetch's 300 s header timeout).
 */
export const WAIT_REQUEST_STEP_SECONDS = 55;

/** A finished wait: how it ended and the sandbox as the server read it then. */
export type SandboxWaitResult = Extract<
  WaitForSandboxQuery['waitForSandbox'],
  { __typename?: 'WaitForSandboxPayload' }
>;

export interface WaitForSandboxOptions {
  /** How long to wait in all (default 300 s). */
  timeoutSeconds?: number;
  /** How long one request waits before the helper asks again (default 55 s, at most 300 s). */
  stepSeconds?: number;
  signal?: AbortSignal;
}

export interface FlotillaClient {
  query<T, V extends Vars>(document: TypedDocumentNode<T, V>, variables?: V): Promise<Result<T>>;
  mutate<T, V extends Vars>(document: TypedDocumentNode<T, V>, variables?: V): Promise<Result<T>>;
  /** One unbroken stream of events: reconnects and resumes from the last cursor by itself. */
  subscribe<T, V extends Vars>(
    document: TypedDocumentNode<T, V>,
    variables: V,
    options?: SubscribeOptions<T>,
  ): AsyncIterableIterator<T>;
  /**
   * Waits until the sandbox is in one of `statuses` (or none of them can follow any more, or the
   * timeout passes), asking `waitForSandbox` again after each server-side timeout or shutdown.
   * `outcome` says which; NotFound and validation errors come back as `error` with their code.
   */
  waitForSandbox(
    id: string,
    statuses: readonly SandboxStatus[],
    options?: WaitForSandboxOptions,
  ): Promise<Result<SandboxWaitResult>>;
  close(): Promise<void>;
}

/** Errors a subscription does not retry: the server refused it, retrying cannot help. */
// INVALID_CURSOR: the same cursor is refused again on every retry (see docs/subscriptions.md).
const FATAL_CODES = new Set([
  'UNAUTHENTICATED',
  'BAD_USER_INPUT',
  'FORBIDDEN',
  'GRAPHQL_VALIDATION_FAILED',
  'GRAPHQL_PARSE_FAILED',
  'VALIDATION_FAILED',
  'NOT_FOUND',
  'INVALID_CURSOR',
]);

/** A subscription the server refused; retrying cannot help. `error.code` says why. */
export class FatalSubscriptionError extends Error {
  constructor(readonly error: ClientError) {
    super(error.message);
  }
}

export function createClient(options: ClientOptions): FlotillaClient {
  const retries = options.retries ?? 3;
  const backoff = options.backoffMs ?? 200;
  const maxBackoff = options.maxBackoffMs ?? 5_000;
  const token = () => (typeof options.token === 'function' ? options.token() : options.token);
  const delay = (attempt: number) => Math.min(maxBackoff, backoff * 2 ** attempt) * (0.75 + Math.random() * 0.5);
  let ws: WsClient | null = null;

  async function request<T>(
    document: DocumentNode,
    variables: Vars | undefined,
    signal?: AbortSignal,
  ): Promise<Result<T>> {
    const body = JSON.stringify({ query: print(document), variables: variables ?? {} });
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      try {
        res = await fetch(options.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/graphql-response+json, application/json',
            authorization: `Bearer ${token()}`,
          },
          body,
          signal,
        });
      } catch (err) {
        if (attempt < retries && !signal?.aborted) {
          await sleep(delay(attempt));
          continue;
        }
        return { ok: false, error: { kind: 'network', code: 'NETWORK_ERROR', message: (err as Error).message } };
      }
      return parseResponse<T>(res);
    }
  }

  function wsClient(): WsClient {
    ws ??= createWsClient({
      url: options.url.replace(/^http/, 'ws'),
      connectionParams: () => ({ authorization: `Bearer ${token()}` }),
      webSocketImpl: options.webSocketImpl,
      lazy: true,
      // Keep the socket a little while after the last subscription ends (e.g. between views).
      lazyCloseTimeout: 3_000,
      // Reconnection is ours: a resumed subscription needs its new cursor in the variables.
      retryAttempts: 0,
      on: {
        connecting: () => options.onConnectionChange?.('connecting'),
        connected: () => options.onConnectionChange?.('connected'),
        closed: () => options.onConnectionChange?.('closed'),
      },
    });
    return ws;
  }

  async function* once<T>(document: DocumentNode, variables: Vars, signal: AbortSignal | undefined): AsyncGenerator<T> {
    if ((options.transport ?? 'ws') === 'sse') {
      yield* sseStream<T>(options.url, token(), document, variables, signal);
      return;
    }
    const client = wsClient();
    const iterator = client.iterate<T>({ query: print(document), variables });
    const onAbort = () => void iterator.return?.();
    signal?.addEventListener('abort', onAbort);
    let refused = false;
    try {
      for await (const result of iterator) {
        if (result.errors?.length) {
          refused = true;
          throw toFatalIfRefused(result.errors);
        }
        if (result.data) yield result.data as T;
      }
    } catch (err) {
      if (Array.isArray(err)) throw toFatalIfRefused(err as ClientError['errors'] & object);
      // The socket failed. A closed socket cannot be reused, so the next attempt opens a new one;
      // drop only this one: another subscription may already be running on its replacement.
      if (!refused && ws === client) {
        ws = null;
        disposeQuietly(client);
      }
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Where a subscription without `after` starts if it subscribes now (the server's `viewer.liveCursor`). */
  async function liveCursor(): Promise<string> {
    const res = await request<LiveCursorQuery>(LiveCursorDocument, undefined);
    if (res.ok) return res.data.viewer.liveCursor;
    throw toFatalIfRefused(res.error.errors ?? [{ message: res.error.message, extensions: { code: res.error.code } }]);
  }

  async function* subscribe<T, V extends Vars>(
    document: TypedDocumentNode<T, V>,
    variables: V,
    opts: SubscribeOptions<T> = {},
  ): AsyncGenerator<T> {
    const resumable = resumableDocument(document, opts.cursorVariable);
    const cursorVariable = resumable.cursorVariable;
    const cursorOf = opts.cursorOf ?? ((data: T) => eventCursorOf(data, resumable.rootKey));
    let cursor = (variables as Vars)[cursorVariable] as string | null | undefined;
    // A stream without `after` starts "now" on the server. Where that is, fetched before it opens,
    // is where it resumes if it is cut before its first event: what happened meanwhile is replayed.
    let start: string | null = null;
    let attempt = 0;
    let reconnecting = false;
    while (!opts.signal?.aborted) {
      try {
        if (!cursor && start === null) start = await liveCursor();
        const after = cursor || (reconnecting ? start : null);
        for await (const data of once<T>(resumable.document, { ...variables, [cursorVariable]: after }, opts.signal)) {
          if (reconnecting) {
            reconnecting = false;
            opts.onResumed?.();
          }
          attempt = 0;
          const next = cursorOf(data);
          if (next) cursor = next;
          yield data;
        }
        return; // the server completed the stream
      } catch (err) {
        if (err instanceof FatalSubscriptionError || opts.signal?.aborted) throw err;
        reconnecting = true;
        opts.onReconnect?.(attempt + 1, err);
        await sleep(delay(attempt));
        attempt++;
      }
    }
  }

  async function waitForSandbox(
    id: string,
    statuses: readonly SandboxStatus[],
    opts: WaitForSandboxOptions = {},
  ): Promise<Result<SandboxWaitResult>> {
    const deadline = Date.now() + (opts.timeoutSeconds ?? WAIT_REQUEST_MAX_SECONDS) * 1000;
    const step = Math.max(1, Math.min(opts.stepSeconds ?? WAIT_REQUEST_STEP_SECONDS, WAIT_REQUEST_MAX_SECONDS));
    for (;;) {
      const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
      const timeoutSeconds = Math.min(left, step);
      const res = await request<WaitForSandboxQuery>(
        WaitForSandboxDocument,
        { id, statuses: [...statuses], timeoutSeconds },
        opts.signal,
      );
      if (!res.ok) return res;
      const answer = unwrapPayload(res.data.waitForSandbox);
      if (!answer.ok) return { ok: false, error: { kind: 'graphql', ...answer.error } };
      const wait = answer.payload;
      const again = wait.outcome === 'TIMED_OUT' || wait.outcome === 'INTERRUPTED';
      if (!again || Date.now() >= deadline || opts.signal?.aborted) return { ok: true, data: wait };
      // A shutting-down server answers at once: give the next replica a moment.
      if (wait.outcome === 'INTERRUPTED') await sleep(delay(0));
    }
  }

  return {
    query: (document, variables) => request(document, variables),
    waitForSandbox: (id, statuses, opts) => waitForSandbox(id, statuses, opts),
    mutate: (document, variables) => request(document, variables),
    subscribe: (document, variables, opts) => subscribe(document, variables, opts),
    async close() {
      const current = ws;
      ws = null;
      // A socket that already failed has nothing left to close.
      await Promise.resolve(current?.dispose()).catch(() => undefined);
    },
  };
}

/** The field carrying each root field's resumable cursor: an Event's `cursor`, a Message's `eventCursor`. */
const CURSOR_FIELDS: Readonly<Record<string, string>> = { messageAdded: 'eventCursor' };

interface ResumableDocument {
  document: DocumentNode;
  /** The variable the root field's `after` takes. */
  cursorVariable: string;
  /** The root field's key in each result (its alias or name). */
  rootKey: string;
}

/**
 * The subscription with what resuming needs: its root field takes `after` from a variable and
 * selects its cursor. Either is added when the document lacks it, so every stream resumes.
 */
function resumableDocument(document: DocumentNode, wanted: string | undefined): ResumableDocument {
  const index = document.definitions.findIndex(
    (d) => d.kind === Kind.OPERATION_DEFINITION && d.operation === 'subscription',
  );
  const operation = document.definitions[index] as OperationDefinitionNode | undefined;
  const root = operation?.selectionSet.selections.find((s): s is FieldNode => s.kind === Kind.FIELD);
  if (!operation || !root) return { document, cursorVariable: wanted ?? 'after', rootKey: '' };
  const rootKey = root.alias?.value ?? root.name.value;
  const passed = root.arguments?.find((a) => a.name.value === 'after');
  if (passed && passed.value.kind !== Kind.VARIABLE) return { document, cursorVariable: wanted ?? 'after', rootKey };
  const cursorVariable = passed?.value.kind === Kind.VARIABLE ? passed.value.name.value : (wanted ?? 'after');
  const cursorField = CURSOR_FIELDS[root.name.value] ?? 'cursor';
  const selections = root.selectionSet?.selections ?? [];
  const selectsCursor = selections.some(
    (s) => s.kind === Kind.FIELD && (s.alias?.value ?? s.name.value) === cursorField,
  );
  const declared = operation.variableDefinitions?.some((v) => v.variable.name.value === cursorVariable);
  const newRoot: FieldNode = {
    ...root,
    arguments: passed
      ? root.arguments
      : [
          ...(root.arguments ?? []),
          {
            kind: Kind.ARGUMENT,
            name: { kind: Kind.NAME, value: 'after' },
            value: { kind: Kind.VARIABLE, name: { kind: Kind.NAME, value: cursorVariable } },
          },
        ],
    selectionSet:
      root.selectionSet && !selectsCursor ? selectionOf([...selections, field(cursorField)]) : root.selectionSet,
  };
  const newOperation: OperationDefinitionNode = {
    ...operation,
    variableDefinitions: declared
      ? operation.variableDefinitions
      : [
          ...(operation.variableDefinitions ?? []),
          {
            kind: Kind.VARIABLE_DEFINITION,
            variable: { kind: Kind.VARIABLE, name: { kind: Kind.NAME, value: cursorVariable } },
            type: { kind: Kind.NAMED_TYPE, name: { kind: Kind.NAME, value: 'String' } },
          },
        ],
    selectionSet: {
      ...operation.selectionSet,
      selections: operation.selectionSet.selections.map((s) => (s === root ? newRoot : s)),
    },
  };
  const definitions = document.definitions.map((d, i) => (i === index ? newOperation : d));
  return { document: { ...document, definitions, loc: undefined }, cursorVariable, rootKey };
}

/** The cursor of one delivered event: the root field's `cursor` or `eventCursor`. */
function eventCursorOf(data: unknown, rootKey: string): string | null {
  const value = (data as Record<string, unknown> | null)?.[rootKey] as Record<string, unknown> | null | undefined;
  const cursor = value?.cursor ?? value?.eventCursor;
  return typeof cursor === 'string' ? cursor : null;
}

function field(name: string, selectionSet?: SelectionSetNode): FieldNode {
  return { kind: Kind.FIELD, name: { kind: Kind.NAME, value: name }, selectionSet };
}

function selectionOf(selections: SelectionSetNode['selections']): SelectionSetNode {
  return { kind: Kind.SELECTION_SET, selections };
}

/** Disposing a client whose connection failed rejects with that failure: nothing to report twice. */
function disposeQuietly(client: WsClient): void {
  Promise.resolve(client.dispose()).catch(() => undefined);
}

function toFatalIfRefused(errors: readonly { message: string; extensions?: Record<string, unknown> }[]): Error {
  const code = String(errors[0]?.extensions?.code ?? 'GRAPHQL_ERROR');
  const error: ClientError = { kind: 'graphql', code, message: errors[0]?.message ?? code, errors: [...errors] };
  return FATAL_CODES.has(code) ? new FatalSubscriptionError(error) : new Error(error.message);
}

async function parseResponse<T>(res: Response): Promise<Result<T>> {
  type Body = { data?: T | null; errors?: ClientError['errors'] } | null;
  let body: Body;
  try {
    body = (await res.json()) as Body;
  } catch {
    return {
      ok: false,
      error: { kind: 'http', code: String(res.status), status: res.status, message: `HTTP ${res.status}` },
    };
  }
  if (body?.errors?.length) {
    const first = body.errors[0];
    return {
      ok: false,
      error: {
        kind: 'graphql',
        code: String(first.extensions?.code ?? 'GRAPHQL_ERROR'),
        message: first.message,
        status: res.status,
        errors: body.errors,
      },
    };
  }
  if (!res.ok || !body?.data) {
    return {
      ok: false,
      error: { kind: 'http', code: String(res.status), status: res.status, message: `HTTP ${res.status}` },
    };
  }
  return { ok: true, data: body.data };
}

/** GraphQL over SSE (Yoga's distinct-connections mode): `event: next` / `event: complete`. */
async function* sseStream<T>(
  url: string,
  token: string,
  document: DocumentNode,
  variables: Vars,
  signal: AbortSignal | undefined,
): AsyncGenerator<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: print(document), variables }),
    signal,
  });
  if (!res.ok || !res.body) {
    const parsed = await parseResponse<T>(res);
    if (!parsed.ok)
      throw toFatalIfRefused(
        parsed.error.errors ?? [{ message: parsed.error.message, extensions: { code: parsed.error.code } }],
      );
    throw new Error(`HTTP ${res.status}`);
  }
  for await (const { event, data } of readServerSentEvents(res.body as unknown as AsyncIterable<Uint8Array>)) {
    if (event === 'complete') return;
    if (event === 'next' && data) {
      const result = JSON.parse(data) as {
        data?: T;
        errors?: { message: string; extensions?: Record<string, unknown> }[];
      };
      if (result.errors?.length) throw toFatalIfRefused(result.errors);
      if (result.data) yield result.data;
    }
  }
  throw new Error('the event stream ended without completing');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
