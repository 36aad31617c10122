import { z } from 'zod';
import { ValidationError } from './errors.js';
import {
  JSON_INPUT_MAX_DEPTH,
  JSON_INPUT_MAX_LENGTH,
  LABEL_KEY_MAX_LENGTH,
  LABEL_VALUE_MAX_LENGTH,
  MAX_LABELS,
  REGION_MAX_LENGTH,
} from './input-limits.js';

/**
 * Parses a caller's input with its zod model; the first issue becomes a ValidationError whose
 * `field` is the dotted path under `field` (e.g. "input.labels.team").
 */
export function parseInput<T>(schema: z.ZodType<T>, value: unknown, field: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const path = issue?.path.map(String) ?? [];
  throw new ValidationError(issue?.message ?? 'invalid input', [field, ...path].join('.'));
}

const LABELS_SHAPE = `labels must map keys of 1 to ${LABEL_KEY_MAX_LENGTH} characters to strings of at most ${LABEL_VALUE_MAX_LENGTH}`;

/** Labels are a flat object of short strings. */
export const labelsInput = z
  .record(z.string(), z.unknown(), { error: 'labels must be an object of strings' })
  .check((ctx) => {
    const entries = Object.entries(ctx.value);
    if (entries.length > MAX_LABELS) {
      ctx.issues.push({ code: 'custom', message: `at most ${MAX_LABELS} labels`, input: ctx.value });
      return;
    }
    const bad = entries.find(
      ([key, value]) =>
        typeof value !== 'string' ||
        key.length === 0 ||
        key.length > LABEL_KEY_MAX_LENGTH ||
        value.length > LABEL_VALUE_MAX_LENGTH,
    );
    if (bad) ctx.issues.push({ code: 'custom', message: LABELS_SHAPE, path: [bad[0]], input: ctx.value });
  })
  .transform((labels) => labels as Record<string, string>);

/** A region name: trimmed, at most REGION_MAX_LENGTH characters; empty means none. */
export const regionInput = z
  .string()
  .trim()
  .max(REGION_MAX_LENGTH, `region must be at most ${REGION_MAX_LENGTH} characters`)
  .nullish()
  .transform((region) => region || null);

/**
 * Any JSON value, nested at most JSON_INPUT_MAX_DEPTH deep and at most JSON_INPUT_MAX_LENGTH
 * characters long. Depth is measured without recursion, so a hostile value nested thousands of
 * levels deep is refused here instead of overflowing the stack later (e.g. in JSON.stringify).
 */
export const jsonInput = z.unknown().check((ctx) => {
  const depth = jsonDepthBeyond(ctx.value, JSON_INPUT_MAX_DEPTH);
  if (depth) {
    ctx.issues.push({
      code: 'custom',
      message: `a JSON value may nest at most ${JSON_INPUT_MAX_DEPTH} levels deep`,
      input: ctx.value,
    });
    return;
  }
  const text = JSON.stringify(ctx.value);
  if (text !== undefined && text.length > JSON_INPUT_MAX_LENGTH)
    ctx.issues.push({
      code: 'custom',
      message: `a JSON value may be at most ${JSON_INPUT_MAX_LENGTH} characters long`,
      input: ctx.value,
    });
});

/** Whether objects and arrays in `value` nest deeper than `max` (walked with an explicit stack). */
function jsonDepthBeyond(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop() as [unknown, number];
    if (node === null || typeof node !== 'object') continue;
    if (depth + 1 > max) return true;
    for (const child of Array.isArray(node) ? node : Object.values(node)) stack.push([child, depth + 1]);
  }
  return false;
}
