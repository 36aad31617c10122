import {
  createSourceEventStream,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  execute,
  print,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Context } from '../../resolvers/builder.js';
import type { Identity } from '../auth/identity.js';
import type { Em } from '../db/orm.js';
import { SharedReads } from '../domain/shared-reads.js';
import type { LogEvent, LogPosition } from '../events/reader.js';
import type { DeliveryGate } from './delivery-gate.js';

/** Results a group keeps for members that have not taken them yet; older ones are executed again if asked. */
export const GROUP_RESULTS_KEPT = 256;
/** Event batches whose data source (EntityManager fork, contexts) stays open for late members. */
export const BATCH_SOURCES_KEPT = 4;

export interface LiveExecutionDeps {
  /** A read-only context for a group, on the batch's EntityManager and shared reads. */
  sharedContext: (identity: Identity, em: Em, reads: SharedReads) => Context;
  /** A fresh EntityManager fork (one per event batch). */
  fork: () => Em;
  /** Which hub read an event came from (events of one batch share a data source). */
  batchOf: (event: LogEvent) => number | undefined;
  /** The hub's log position: the newest event it has fanned out (a new live subscriber starts after it). */
  position: () => LogPosition;
  gate: DeliveryGate;
}

/** Counters for /metrics and for tests (counts, not timings). */
export interface LiveExecutionStats {
  groups: number;
  executions: number;
  deliveries: number;
}

/** A result executed once for a whole group carries its JSON, made once (graphql-yoga's SSE writer calls it too). */
type SharedResult = ExecutionResult & { stringify: () => string };

/** The serialised form of a result executed once for a whole group, if it is one. */
export function sharedJsonOf(result: unknown): string | undefined {
  const stringify = typeof result === 'object' && result !== null ? (result as SharedResult).stringify : undefined;
  return typeof stringify === 'function' ? stringify() : undefined;
}

/**
 * Shared execution of live subscriptions (Hasura's multiplexing, per event instead of per poll).
 * Subscribers are grouped by what decides their result: the operation document, its variables
 * and the caller's access (platform admin, worker, scopes, role per tenant), never the token.
 * Each event's selection runs once per group, on one data source per event batch, and is
 * serialised once; each member still passes its own per-event authorization in the hub.
 */
export class LiveExecution {
  private readonly groups = new Map<string, LiveGroup>();
  private readonly sources = new Map<number, BatchSource>();
  private executions = 0;
  private deliveries = 0;

  constructor(private readonly deps: LiveExecutionDeps) {}

  /** A Yoga/envelop plugin that routes every subscription through the groups. */
  plugin(): Plugin {
    return {
      onSubscribe: ({ setSubscribeFn }) => {
        setSubscribeFn((args) => this.subscribe(args as ExecutionArgs));
      },
    };
  }

  stats(): LiveExecutionStats {
    return { groups: this.groups.size, executions: this.executions, deliveries: this.deliveries };
  }

  /** Runs the subscribe resolver for this subscriber (its own checks), then joins its group. */
  async subscribe(args: ExecutionArgs): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
    const source = await createSourceEventStream(args);
    if (!isAsyncIterable(source)) return source;
    const identity = (args.contextValue as Context).identity;
    // A live member gets only events after the hub's position now; a replaying one gets older ones too.
    const member: Member = { from: this.deps.position(), taken: -1n, identity };
    const group = this.join(args, member);
    return this.stream(group, member, source[Symbol.asyncIterator](), args);
  }

  /** Adds the member to the group of its operation, variables and access, created if need be. */
  private join(args: ExecutionArgs, member: Member): LiveGroup {
    const key = groupKey(args, member.identity);
    let group = this.groups.get(key);
    if (!group) {
      group = new LiveGroup(key, args, member.identity);
      this.groups.set(key, group);
    }
    group.members.add(member);
    return group;
  }

  private release(group: LiveGroup, member: Member): void {
    group.leave(member);
    if (group.members.size === 0 && this.groups.get(group.key) === group) this.groups.delete(group.key);
  }

  /** One member's stream: its own events (already authorized by the hub), the group's results. */
  private stream(
    joined: LiveGroup,
    member: Member,
    source: AsyncIterator<unknown>,
    args: ExecutionArgs,
  ): AsyncIterableIterator<ExecutionResult> {
    let group = joined;
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      this.release(group, member);
    };
    const context = args.contextValue as Context;
    const iterator: AsyncIterableIterator<ExecutionResult> = {
      [Symbol.asyncIterator]: () => iterator,
      next: async () => {
        try {
          const step = await source.next();
          if (step.done) {
            leave();
            return { done: true, value: undefined };
          }
          // An access change narrowed this subscriber (its context now holds the narrowed identity,
          // resolvers/event-stream.ts): it moves to the group of its new access, never executing
          // with, or sharing the results of, the access it lost.
          if (context.identity !== member.identity && !left) {
            this.release(group, member);
            member.identity = context.identity;
            group = this.join(args, member);
          }
          const value = isLogEvent(step.value)
            ? await this.resultFor(group, member, step.value)
            : await execute({ ...args, rootValue: step.value });
          await this.deps.gate.turn();
          this.deliveries++;
          return { done: false, value };
        } catch (error) {
          // The hub ends streams by rejecting next() (too slow, revoked, shutting down); nobody
          // calls return() after that, so the member leaves here.
          leave();
          throw error;
        }
      },
      return: async () => {
        leave();
        await source.return?.();
        return { done: true, value: undefined };
      },
      throw: async (error: unknown) => {
        leave();
        await source.return?.();
        throw error;
      },
    };
    return iterator;
  }

  private resultFor(group: LiveGroup, member: Member, event: LogEvent): Promise<ExecutionResult> {
    const position = event.position;
    let entry = group.results.get(event.id);
    if (!entry) {
      entry = { result: this.execute(group, event), position, waiting: group.expecting(position) };
      group.results.set(event.id, entry);
      if (group.results.size > GROUP_RESULTS_KEPT) {
        const oldest = group.results.keys().next().value;
        if (oldest !== undefined) group.results.delete(oldest);
      }
    }
    member.taken = position;
    entry.waiting--;
    if (entry.waiting <= 0) group.results.delete(event.id);
    return entry.result;
  }

  private async execute(group: LiveGroup, event: LogEvent): Promise<ExecutionResult> {
    this.executions++;
    const result = await execute({
      schema: group.args.schema,
      document: group.args.document,
      operationName: group.args.operationName,
      variableValues: group.args.variableValues,
      rootValue: event,
      contextValue: this.contextFor(group, event),
    });
    if (!result.errors?.length) {
      const json = JSON.stringify(result);
      // Not enumerable: the result itself still serialises as a plain GraphQL result.
      Object.defineProperty(result, 'stringify', { value: () => json, enumerable: false });
    }
    return result;
  }

  /** One EntityManager fork and one set of shared reads per event batch; one context (DataLoaders) per group in it. */
  private contextFor(group: LiveGroup, event: LogEvent): Context {
    const batch = this.deps.batchOf(event);
    let source = batch === undefined ? undefined : this.sources.get(batch);
    if (!source) {
      const em = this.deps.fork();
      source = { em, reads: new SharedReads(em), contexts: new Map() };
      if (batch !== undefined) {
        this.sources.set(batch, source);
        if (this.sources.size > BATCH_SOURCES_KEPT) {
          const oldest = this.sources.keys().next().value;
          if (oldest !== undefined) this.sources.delete(oldest);
        }
      }
    }
    let context = source.contexts.get(group.key);
    if (!context) {
      context = this.deps.sharedContext(group.identity, source.em, source.reads);
      source.contexts.set(group.key, context);
    }
    return context;
  }
}

interface BatchSource {
  em: Em;
  /** Rows by id read once for all groups of the batch; each group's services filter them for its caller. */
  reads: SharedReads;
  contexts: Map<string, Context>;
}

/** A group member: where its live stream started, the last event it took, and the access it is grouped by. */
interface Member {
  from: bigint;
  taken: bigint;
  identity: Identity;
}

interface MemoEntry {
  result: Promise<ExecutionResult>;
  position: bigint;
  /** Members that may still take it: kept exact, so the entry goes as soon as the last one has it. */
  waiting: number;
}

class LiveGroup {
  readonly members = new Set<Member>();
  /** Results by event id. Insertion order is event order. */
  readonly results = new Map<string, MemoEntry>();
  readonly args: ExecutionArgs;

  constructor(
    readonly key: string,
    args: ExecutionArgs,
    /** Any member's identity: every member's access is the same, that is what the key says. */
    readonly identity: Identity,
  ) {
    // Keep only what execution needs, not the first member's context.
    this.args = {
      schema: args.schema,
      document: args.document,
      operationName: args.operationName,
      variableValues: args.variableValues,
    };
  }

  /** Members that will take the event at `position`: joined before it, not past it yet. */
  expecting(position: bigint): number {
    let count = 0;
    for (const m of this.members) if (m.from < position && m.taken < position) count++;
    return count;
  }

  /** A leaving member will not take what it had not taken yet. */
  leave(member: Member): void {
    this.members.delete(member);
    for (const [id, entry] of this.results) {
      if (entry.position <= member.taken || entry.position <= member.from) continue;
      entry.waiting--;
      if (entry.waiting <= 0) this.results.delete(id);
    }
  }
}

/**
 * The operation (its text), the variables and the access profile. Two identities with equal
 * profiles are indistinguishable to every resolver an event selection can reach.
 */
function groupKey(args: ExecutionArgs, identity: Identity): string {
  return [
    documentText(args.document),
    args.operationName ?? '',
    stableJson(args.variableValues ?? {}),
    accessKey(identity),
  ].join('\u0000');
}

const documentTexts = new WeakMap<DocumentNode, string>();

function documentText(document: DocumentNode): string {
  let text = documentTexts.get(document);
  if (text === undefined) {
    text = document.loc?.source.body ?? print(document);
    documentTexts.set(document, text);
  }
  return text;
}

export function accessKey(identity: Identity): string {
  if (identity.platformAdmin) return 'platform-admin';
  const roles = [...identity.tenantRoles].map(([tenant, role]) => `${tenant}=${role}`).sort();
  const scopes = [...identity.scopes].sort();
  return `worker=${identity.workerId ?? ''};scopes=${scopes.join(',')};roles=${roles.join(',')}`;
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}

function isLogEvent(value: unknown): value is LogEvent {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as LogEvent).id === 'string' &&
    typeof (value as LogEvent).cursor === 'string'
  );
}
