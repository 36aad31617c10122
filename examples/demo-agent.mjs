#!/usr/bin/env node
// A tiny stand-in for an AI agent, used by `flotilla demo`: it "thinks", prints, runs a
// pretend tool, then asks for input and answers what it is told. It reports its phase to the
// worker with JSON status lines, and exits when its input closes or it is told "exit".
// Its sandbox uses the JSON_LINES stdin framing: each input line is one message as a JSON object
// ({"id","threadId","channel","senderKind","senderId","body",...}), so a multi-line message is one
// message. A line that is not such an object (the PLAIN framing) is taken as a message itself.
import { createInterface } from 'node:readline';

const name = process.env.FLOTILLA_SANDBOX_NAME ?? 'agent';
const pause = (ms) => new Promise((r) => setTimeout(r, ms));
const status = (phase, activity) => console.log(JSON.stringify({ flotilla: { phase, activity } }));
const think = Number(process.env.DEMO_THINK_MS ?? 1500);

const lines = createInterface({ input: process.stdin });
const inbox = [];
let waiting = null;
const messageOf = (line) => {
  try {
    const frame = JSON.parse(line);
    if (frame && typeof frame.body === 'string') return frame.body;
  } catch {
    // not a frame: a plain line
  }
  return line;
};
lines.on('line', (line) => {
  const message = messageOf(line);
  if (waiting) {
    const resolve = waiting;
    waiting = null;
    resolve(message);
  } else inbox.push(message);
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
  const lineCount = said.split('\n').length;
  status('THINKING', `thinking about "${said.slice(0, 40)}"`);
  await pause(think);
  console.log(
    `${name}: you said "${said}"${lineCount > 1 ? ` (one message of ${lineCount} lines)` : ''}. Done, what else?`,
  );
}
