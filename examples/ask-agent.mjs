#!/usr/bin/env node
// An agent that asks people a question through the worker's status-line protocol and waits for
// the answer on its standard input (docs/worker.md). It prints what it received, then exits.
//   node ask-agent.mjs ["prompt"] ["option,option"] [--free-text]
import { createInterface } from 'node:readline';

const [prompt = 'Deploy to production?', optionList = 'yes,no'] = process.argv
  .slice(2)
  .filter((a) => a !== '--free-text');
const options = optionList.split(',').filter(Boolean);
const allowFreeText = process.argv.includes('--free-text');

console.log('asker: I need a decision before I go on.');
console.log(JSON.stringify({ flotilla: { question: { prompt, options, allowFreeText } } }));

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  let answer;
  try {
    answer = JSON.parse(line)?.flotilla?.answer;
  } catch {
    answer = undefined;
  }
  if (!answer) {
    console.log(`asker: (not an answer) ${line}`);
    return;
  }
  console.log(`asker: received ${JSON.stringify(answer)}`);
  console.log(`asker: going ahead with ${answer.choice ?? answer.text}`);
  lines.close();
});
lines.on('close', () => process.exit(0));
