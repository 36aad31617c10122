import { describe, expect, it } from 'vitest';
import { answerLine } from '../../src/worker/answers.js';
import { parseQuestionLine, parseStatusLine } from '../../src/worker/status-line.js';

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

  it('reads a question with its options, free-text flag and thread', () => {
    expect(
      parseQuestionLine('{"flotilla":{"question":{"prompt":"Deploy?","options":["yes","no"],"allowFreeText":false}}}'),
    ).toEqual({ prompt: 'Deploy?', options: ['yes', 'no'], allowFreeText: false });
    expect(
      parseQuestionLine('{"flotilla":{"question":{"prompt":"Why?","allowFreeText":true,"threadId":"t1"}}}'),
    ).toEqual({ prompt: 'Why?', options: [], allowFreeText: true, threadId: 't1' });
    // A question line is not a status line, and a status line is not a question.
    expect(parseStatusLine('{"flotilla":{"question":{"prompt":"Deploy?","options":["yes"]}}}')).toBeNull();
    expect(parseQuestionLine('{"flotilla":{"phase":"THINKING"}}')).toBeNull();
  });

  it('treats a malformed question as ordinary output', () => {
    for (const line of [
      '{"flotilla":{"question":{"options":["yes"]}}}',
      '{"flotilla":{"question":{"prompt":3}}}',
      '{"flotilla":{"question":{"prompt":"p","options":"yes"}}}',
      '{"flotilla":{"question":{"prompt":"p","options":[1,2]}}}',
      '{"flotilla":{"question":{"prompt":"p","allowFreeText":"yes"}}}',
      '{"flotilla":{"question":{"prompt":"p","threadId":7}}}',
      '{"flotilla":{"question":["p"]}}',
      '{"flotilla":{"question":"p"}}',
      '{"flotilla":{"question":{"prompt":"p"}}',
    ]) {
      expect(parseQuestionLine(line), line).toBeNull();
    }
  });

  it('writes an answer as one JSON line with the question id and either the choice or the text', () => {
    expect(answerLine({ body: 'yes', question: { id: 'Q1', answerChoice: 'yes', answerText: null } })).toBe(
      '{"flotilla":{"answer":{"questionId":"Q1","choice":"yes","text":null}}}\n',
    );
    const text = answerLine({
      body: 'line one\nline two',
      question: { id: 'Q2', answerChoice: null, answerText: 'line one\nline two' },
    });
    expect(text.endsWith('\n')).toBe(true);
    expect(text.slice(0, -1)).not.toContain('\n');
    expect(JSON.parse(text)).toEqual({
      flotilla: { answer: { questionId: 'Q2', choice: null, text: 'line one\nline two' } },
    });
  });
});
