/**
 * Reading a secret: from a terminal without echoing it, or the first line of a pipe
 * (`printf '%s\n' "$PW" | ...`), so a password never needs to be on a command line where
 * shell history and `ps` would keep it. Shared by the CLI and `npm run admin`.
 */
import type { Readable, Writable } from 'node:stream';

type TtyInput = Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

export class PromptCancelled extends Error {}

export async function readSecret(prompt: string, input: TtyInput = process.stdin, output: Writable = process.stderr): Promise<string> {
  if (input.isTTY && input.setRawMode) return readFromTerminal(prompt, input, output);
  return readFirstLine(input);
}

function readFromTerminal(prompt: string, input: TtyInput, output: Writable): Promise<string> {
  // Echo off before the prompt shows: whoever starts typing when it appears must not
  // have their first characters echoed by the terminal.
  input.setRawMode!(true);
  output.write(prompt);
  input.setEncoding('utf8');
  input.resume();
  return new Promise((resolve, reject) => {
    let value = '';
    const finish = (outcome: () => void) => {
      input.off('data', onData);
      input.setRawMode!(false);
      input.pause();
      output.write('\n');
      outcome();
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return finish(() => resolve(value));
        // Ctrl-C and Ctrl-D: raw mode delivers them as characters instead of signals.
        if (ch === '\u0003' || (ch === '\u0004' && value === '')) return finish(() => reject(new PromptCancelled('cancelled')));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else if (ch >= ' ') value += ch;
      }
    };
    input.on('data', onData);
  });
}

async function readFirstLine(input: Readable): Promise<string> {
  let text = '';
  for await (const chunk of input) {
    text += typeof chunk === 'string' ? chunk : (chunk as Buffer).toString('utf8');
    const end = text.indexOf('\n');
    if (end >= 0) return text.slice(0, end).replace(/\r$/, '');
  }
  return text.replace(/\r$/, '');
}
