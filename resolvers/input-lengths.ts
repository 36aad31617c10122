// Every String and ID input of the schema has a named length limit, checked before any resolver
// runs: a field's own rules (patterns, trimming) stay in its service, this only bounds the size.
// A new string input without a limit here (by coordinate, by name or by type) fails at start-up.

import { wrapOrThrow } from '@pothos/plugin-errors';
import {
  defaultFieldResolver,
  type GraphQLFieldResolver,
  type GraphQLInputType,
  type GraphQLSchema,
  getNullableType,
  isInputObjectType,
  isListType,
  isObjectType,
  isScalarType,
  isUnionType,
} from 'graphql';
import { CHANNEL_URL_MAX_LENGTH } from '../src/domain/channels.js';
import { DELIVERY_ERROR_MAX_LENGTH } from '../src/domain/delivery.js';
import { ValidationError } from '../src/domain/errors.js';
import {
  COMMAND_ARG_MAX_LENGTH,
  CURSOR_INPUT_MAX_LENGTH,
  CUT_TEXT_INPUT_MAX_LENGTH,
  ENV_NAME_MAX_LENGTH,
  ENV_VALUE_MAX_BYTES,
  FENCING_TOKEN_MAX_LENGTH,
  ID_INPUT_MAX_LENGTH,
  IMAGE_PATTERN_MAX_LENGTH,
  MESSAGE_CHANNEL_MAX_LENGTH,
  PUBLIC_BASE_URL_MAX_LENGTH,
  QUESTION_OPTION_MAX_LENGTH,
  QUESTION_PROMPT_MAX_LENGTH,
  REGION_MAX_LENGTH,
  RESTART_REASON_MAX_LENGTH,
  TENANT_SLUG_MAX_LENGTH,
  THREAD_ID_MAX_LENGTH,
  WORKER_NAME_MAX_LENGTH,
} from '../src/domain/input-limits.js';
import { MAX_MESSAGE_BYTES } from '../src/domain/messages.js';
import { IMAGE_MAX_LENGTH, SANDBOX_NAME_MAX_LENGTH } from '../src/domain/sandboxes.js';
import { MEMBER_SUBJECT_MAX_LENGTH, TENANT_NAME_MAX_LENGTH } from '../src/domain/tenants.js';

/** Limits by schema coordinate (`Input.field` or `Type.field(arg)`). */
const BY_COORDINATE: Readonly<Record<string, number>> = {
  'AddMemberInput.subject': MEMBER_SUBJECT_MAX_LENGTH,
  'CreateChannelInput.name': MESSAGE_CHANNEL_MAX_LENGTH,
  'CreateChannelInput.outboundUrl': CHANNEL_URL_MAX_LENGTH,
  'CreateSandboxInput.command': COMMAND_ARG_MAX_LENGTH,
  'CreateSandboxInput.image': IMAGE_MAX_LENGTH,
  'CreateSandboxInput.name': SANDBOX_NAME_MAX_LENGTH,
  'CreateTenantInput.name': TENANT_NAME_MAX_LENGTH,
  'CreateTenantInput.slug': TENANT_SLUG_MAX_LENGTH,
  'UpdateTenantInput.name': TENANT_NAME_MAX_LENGTH,
  'Query.tenant(slug)': TENANT_SLUG_MAX_LENGTH,
  'HeartbeatInput.version': CUT_TEXT_INPUT_MAX_LENGTH,
  'ReportAgentStatusInput.activity': CUT_TEXT_INPUT_MAX_LENGTH,
  'ReportSandboxStatusInput.reason': CUT_TEXT_INPUT_MAX_LENGTH,
  'RestartSandboxInput.reason': RESTART_REASON_MAX_LENGTH,
  'ReportMessageDeliveryInput.reason': DELIVERY_ERROR_MAX_LENGTH,
  'PlacementInput.region': REGION_MAX_LENGTH,
  'RegisterWorkerInput.region': REGION_MAX_LENGTH,
  'RegisterWorkerInput.name': WORKER_NAME_MAX_LENGTH,
  'WorkerPortsInput.publicBaseUrl': PUBLIC_BASE_URL_MAX_LENGTH,
  'PolicyInput.allowedImages': IMAGE_PATTERN_MAX_LENGTH,
  'PostAgentMessageInput.body': MAX_MESSAGE_BYTES,
  'PostAgentQuestionInput.prompt': QUESTION_PROMPT_MAX_LENGTH,
  'PostAgentQuestionInput.options': QUESTION_OPTION_MAX_LENGTH,
  'PostAgentQuestionInput.channel': MESSAGE_CHANNEL_MAX_LENGTH,
  'AnswerQuestionInput.choice': QUESTION_OPTION_MAX_LENGTH,
  'AnswerQuestionInput.text': MAX_MESSAGE_BYTES,
  'SendMessageInput.body': MAX_MESSAGE_BYTES,
  'SendMessageInput.channel': MESSAGE_CHANNEL_MAX_LENGTH,
  'SandboxFilter.nameContains': SANDBOX_NAME_MAX_LENGTH,
  'SetEnvVarInput.name': ENV_NAME_MAX_LENGTH,
  'SetEnvVarInput.value': ENV_VALUE_MAX_BYTES,
  'SetSecretInput.name': ENV_NAME_MAX_LENGTH,
  'SetSecretInput.value': ENV_VALUE_MAX_BYTES,
  'DeleteEnvInput.name': ENV_NAME_MAX_LENGTH,
};

/** Limits by argument or input field name, wherever it appears. */
const BY_NAME: Readonly<Record<string, number>> = {
  after: CURSOR_INPUT_MAX_LENGTH,
  fencingToken: FENCING_TOKEN_MAX_LENGTH,
  threadId: THREAD_ID_MAX_LENGTH,
};

/** The limit of one string input; throws when it has none (a schema change forgot to name one). */
function limitOf(coordinate: string, name: string, scalar: string): number {
  const limit = BY_COORDINATE[coordinate] ?? BY_NAME[name] ?? (scalar === 'ID' ? ID_INPUT_MAX_LENGTH : undefined);
  if (limit === undefined)
    throw new Error(`the string input ${coordinate} has no length limit: name one in resolvers/input-lengths.ts`);
  return limit;
}

/** Finds the first string in `value` longer than its limit; `path` names it for the error. */
type Check = (value: unknown, path: string) => ValidationError | null;

interface Walk {
  /** coordinate -> limit, for every string input reached. */
  limits: Map<string, number>;
  /** Checks per input object type, shared by every field that takes it. */
  inputs: Map<string, Check | null>;
}

function checkOf(type: GraphQLInputType, coordinate: string, name: string, walk: Walk): Check | null {
  const inner = getNullableType(type);
  if (isListType(inner)) {
    const item = checkOf(inner.ofType, coordinate, name, walk);
    if (!item) return null;
    return (value, path) => {
      if (!Array.isArray(value)) return item(value, path);
      for (const [i, element] of value.entries()) {
        const error = item(element, `${path}.${i}`);
        if (error) return error;
      }
      return null;
    };
  }
  if (isScalarType(inner)) {
    if (inner.name !== 'String' && inner.name !== 'ID') return null;
    const limit = limitOf(coordinate, name, inner.name);
    walk.limits.set(coordinate, limit);
    return (value, path) =>
      typeof value === 'string' && value.length > limit
        ? new ValidationError(`${path} must be at most ${limit} characters`, path)
        : null;
  }
  if (!isInputObjectType(inner)) return null;
  if (walk.inputs.has(inner.name)) {
    // Computed already, or being computed (a recursive input): look it up when checking.
    return (value, path) => walk.inputs.get(inner.name)?.(value, path) ?? null;
  }
  walk.inputs.set(inner.name, null);
  const fields = Object.values(inner.getFields()).flatMap((field) => {
    const check = checkOf(field.type, `${inner.name}.${field.name}`, field.name, walk);
    return check ? [{ name: field.name, check }] : [];
  });
  const check: Check | null =
    fields.length === 0
      ? null
      : (value, path) => {
          if (typeof value !== 'object' || value === null) return null;
          for (const field of fields) {
            const error = field.check((value as Record<string, unknown>)[field.name], `${path}.${field.name}`);
            if (error) return error;
          }
          return null;
        };
  walk.inputs.set(inner.name, check);
  return check;
}

/** Every String and ID input of the schema with its limit (tests walk it). */
export function stringInputLimits(schema: GraphQLSchema): Map<string, number> {
  const walk: Walk = { limits: new Map(), inputs: new Map() };
  for (const type of Object.values(schema.getTypeMap())) {
    if (type.name.startsWith('__')) continue;
    if (isObjectType(type))
      for (const field of Object.values(type.getFields()))
        for (const arg of field.args) checkOf(arg.type, `${type.name}.${field.name}(${arg.name})`, arg.name, walk);
    if (isInputObjectType(type)) checkOf(type, type.name, type.name, walk);
  }
  return walk.limits;
}

/**
 * Wraps every field that takes string inputs so that an over-long one is refused before its
 * resolver (or, for a subscription, its subscribe) runs: as the typed ValidationError where the
 * field's result union has one, as a VALIDATION_FAILED error otherwise.
 */
export function limitStringInputs(schema: GraphQLSchema): void {
  const walk: Walk = { limits: new Map(), inputs: new Map() };
  const subscription = schema.getSubscriptionType();
  for (const type of Object.values(schema.getTypeMap())) {
    if (!isObjectType(type) || type.name.startsWith('__')) continue;
    for (const field of Object.values(type.getFields())) {
      const checks = field.args.flatMap((arg) => {
        const check = checkOf(arg.type, `${type.name}.${field.name}(${arg.name})`, arg.name, walk);
        return check ? [{ name: arg.name, check }] : [];
      });
      if (checks.length === 0) continue;
      const refuse = (args: Record<string, unknown>): ValidationError | null => {
        for (const { name, check } of checks) {
          const error = check(args[name], name);
          if (error) return error;
        }
        return null;
      };
      const result = getNullableType(field.type);
      const typed = isUnionType(result) && result.getTypes().some((t) => t.name === 'ValidationError');
      const guard =
        (inner: GraphQLFieldResolver<unknown, unknown> | undefined): GraphQLFieldResolver<unknown, unknown> =>
        (source, args, ctx, info) => {
          const error = refuse(args);
          // As the errors plugin answers a ValidationError a resolver throws: the union's member.
          if (error && typed && type !== subscription) return wrapOrThrow(error, [ValidationError]);
          if (error) throw error;
          return (inner ?? defaultFieldResolver)(source, args, ctx, info);
        };
      if (type === subscription) field.subscribe = guard(field.subscribe);
      else field.resolve = guard(field.resolve);
    }
  }
}
