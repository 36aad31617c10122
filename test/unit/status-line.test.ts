import { describe, expect, it } from 'vitest';
import { parseStatusLine } from '../../src/worker/status-line.js';

describe('the worker status-line protocol', () => {
  it('reads a phase and an optional activity', () => {
    expect(parseStatusLine('{"flotilla":{"phase":"THINKING","activity":"reading"}}')).toEqual({
      phase: 'THINKING',
      activity: 'reading',
    });
    expect(parseStatusLine('{"flotilla":{"phase":"DONE"}}')).toEqual({ phase: 'DONE' });
  });

  it('cuts a long activity to 500 characters', () => {
    expect(
      parseStatusLine(JSON.stringify({ flotilla: { phase: 'EXECUTING', activity: 'x'.repeat(600) } }))?.activity,
    ).toHaveLength(500);
  });

  it('treats anything else as ordinary output', () => {
    for (const line of [
      'hello',
      '{"flotilla":{"phase":"SLEEPING"}}',
      '{"flotilla":{"phase":"THINKING"',
      '{"other":{"phase":"THINKING"}}',
      ' {"flotilla":{"phase":"THINKING"}}',
      '{"flotilla":{"activity":"no phase"}}',
    ]) {
      expect(parseStatusLine(line), line).toBeNull();
    }
  });
});
