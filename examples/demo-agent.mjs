#!/usr/bin/env node
// A tiny stand-in for an AI agent, used by `flotilla demo`: it "thinks", prints, runs a
// pretend tool, then asks for input and answers what it is told. It reports its phase to the
// worker with JSON status lines, and exits when its input closes or it is told "exit".
import { createInterface } from 'node:readline';

const name = process.env.FLOTILLA_SANDBOX_NAME ?? 'agent';
const pause = (ms) => new Promise((r) => setTimeout(r, ms));
const status = (phase, activity) => console.log(JSON.stringify({ flotilla: { phase, activity } }));
const think = Number(process.env.DEMO_THINK_MS ?? 1500);

const lines = createInterface({ input: process.stdin });
const inbox = [];
let waiting = null;
lines.on('line', (line) => {
  if (waiting) {
    const resolve = waiting;
    waiting = null;
    resolve(line);
  } else inbox.push(line);
});
lines.on('close', () => process.exit(0));
const nextInput = () => (inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => (waiting = r)));

status('THINKING', 'reading the task');
console.log(`${name}: hello! I am a demo agent. Let me look around.`);
await pause(think);
status('EXECUTING', 'listing files');
console.log(`${name}: $ ls`);
console.log('README.md  src/  test/');
await pause(think);
for (;;) {
  status('WAITING_FOR_INPUT', 'waiting for your message');
  console.log(`${name}: what should I do next? (say "exit" to stop me)`);
  const said = (await nextInput()).trim();
  if (said === 'exit') {
    status('DONE', 'finished');
    console.log(`${name}: bye!`);
    process.exit(0);
  }
  status('THINKING', `thinking about "${said.slice(0, 40)}"`);
  await pause(think);
  console.log(`${name}: you said "${said}". Done, what else?`);
}
