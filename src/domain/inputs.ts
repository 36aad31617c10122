import { z } from 'zod';
import { ValidationError } from './errors.js';
import { LABEL_KEY_MAX_LENGTH, LABEL_VALUE_MAX_LENGTH, MAX_LABELS } from './input-limits.js';

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
