import { Command } from 'commander';
import type { DeadLetter, DeadLetters } from '@redsource/processor';
import { table } from './status.ts';
import { UsageError } from './usage.ts';

/** A dead letter as the CLI prints it: the fields as text (bytes that are not UTF-8 escaped as \\xHH), not the raw bytes. */
const printable = ({ bytes: _bytes, ...letter }: DeadLetter) => letter;

/** What a dlq action needs: the dead letters and the profile streams (opened only once the arguments are valid). */
export interface DlqContext {
  readonly deadLetters: DeadLetters;
  readonly streams: readonly string[];
}

type Run = (body: (ctx: DlqContext) => Promise<number>) => Promise<void>;

const out = (text: string) => process.stdout.write(`${text}\n`);

/** `redsource dlq list|show|retry|drop`; `run` opens Redis, runs the body and records its exit code. */
export function dlqCommand(run: Run): Command {
  const dlq = new Command('dlq').description('dead-lettered entries: list, inspect, re-drive, drop');
  dlq
    .command('list')
    .description('dead-lettered entries (every profile stream by default), at most 1,000 per stream')
    .argument('[stream]', 'one stream')
    .option('--json', 'the dead letters as one JSON array on stdout')
    .action((stream: string | undefined, opts: { json?: boolean }) =>
      run(async ({ deadLetters, streams }) => {
        const rows = (
          await Promise.all((stream ? [stream] : streams).map((s) => deadLetters.list(s, { count: 1_000 })))
        ).flat();
        if (opts.json) out(JSON.stringify(rows.map(printable)));
        else if (rows.length === 0) out('no dead-lettered entries');
        else
          out(
            table(
              ['stream', 'dead letter', 'entry', 'dead-lettered at', 'reason'],
              rows.map((r) => [r.stream, r.id, r.entryId, new Date(r.deadAt).toISOString(), r.reason]),
            ),
          );
        return 0;
      }),
    );
  dlq
    .command('show')
    .description('one dead letter: its reason and the original fields')
    .argument('<stream>')
    .argument('<id>', 'the dead letter id (see dlq list)')
    .option('--json', 'as JSON on stdout')
    .action((stream: string, id: string, opts: { json?: boolean }) =>
      run(async ({ deadLetters }) => {
        const letter = await deadLetters.show(stream, id);
        if (!letter) {
          process.stderr.write(`redsource: no dead letter ${id} for stream '${stream}'\n`);
          return 1;
        }
        const fields = Object.entries(printable(letter)).map(
          ([k, v]) => `${k}: ${Array.isArray(v) ? v.join(' ') : String(v)}`,
        );
        out(opts.json ? JSON.stringify(printable(letter)) : fields.join('\n'));
        return 0;
      }),
    );
  for (const action of ['retry', 'drop'] as const) {
    dlq
      .command(action)
      .description(
        action === 'retry'
          ? 'append the original entry to its stream again, and remove the dead letter'
          : 'remove dead letters',
      )
      .argument('<stream>')
      .argument('[id]', 'the dead letter id (see dlq list)')
      .option('--all', `${action} every dead letter of the stream`)
      .action((stream: string, id: string | undefined, opts: { all?: boolean }) => {
        if ((id === undefined) === (opts.all !== true))
          throw new UsageError(`dlq ${action} takes a dead letter id or --all (one of them)`);
        return run(async ({ deadLetters }) => redrive(deadLetters, action, stream, opts.all ? undefined : id));
      });
  }
  return dlq;
}

/** Retries or drops one dead letter (`id`) or all of a stream's; 1 when some were not found. */
async function redrive(
  deadLetters: DeadLetters,
  action: 'retry' | 'drop',
  stream: string,
  id: string | undefined,
): Promise<number> {
  const ids = id !== undefined ? [id] : (await deadLetters.list(stream, { count: 100_000 })).map((l) => l.id);
  if (ids.length === 0) {
    out('nothing to do');
    return 0;
  }
  let missing = 0;
  for (const each of ids) {
    if (action === 'retry') {
      const newId = await deadLetters.retry(stream, each);
      if (newId) out(`${each} -> ${stream} ${newId}`);
      else missing++;
    } else if (await deadLetters.drop(stream, each)) out(`dropped ${each}`);
    else missing++;
  }
  if (missing > 0) process.stderr.write(`redsource: ${missing} dead letter(s) not found in stream '${stream}'\n`);
  return missing > 0 ? 1 : 0;
}
