import type { DeadLetter, DeadLetters } from '@redsource/processor';

/** A dead letter as the CLI prints it: the fields as text (bytes that are not UTF-8 escaped as \\xHH), not the raw bytes. */
const printable = ({ bytes: _bytes, ...letter }: DeadLetter) => letter;

export const DLQ_USAGE = `redsource dlq list [<stream>] [--json]      dead-lettered entries (every profile stream by default)
redsource dlq show <stream> <id> [--json]
redsource dlq retry <stream> <id>|--all     append the original entry to its stream again
redsource dlq drop <stream> <id>|--all`;

/** `redsource dlq …`; returns the exit code. */
export async function runDlq(deadLetters: DeadLetters, streams: readonly string[], args: readonly string[], flags: { json: boolean; all: boolean }): Promise<number> {
  const [action, stream, id] = args;
  const out = (text: string) => process.stdout.write(`${text}\n`);
  const fail = (text: string) => {
    process.stderr.write(`${text}\n\n${DLQ_USAGE}\n`);
    return 2;
  };
  if (action === 'list') {
    const chosen = stream ? [stream] : streams;
    const rows = (await Promise.all(chosen.map((s) => deadLetters.list(s, { count: 1_000 })))).flat();
    if (flags.json) out(JSON.stringify(rows.map(printable)));
    else if (rows.length === 0) out('no dead-lettered entries');
    else for (const r of rows) out(`${r.stream}  ${r.id}  entry ${r.entryId}  ${new Date(r.deadAt).toISOString()}  ${r.reason}`);
    return 0;
  }
  if (action !== 'show' && action !== 'retry' && action !== 'drop') return fail(`Unknown dlq action '${action ?? ''}'.`);
  if (!stream) return fail(`dlq ${action} needs a stream.`);
  if (action === 'show') {
    if (!id) return fail('dlq show needs a dead letter id (see dlq list).');
    const letter = await deadLetters.show(stream, id);
    if (!letter) {
      process.stderr.write(`No dead letter ${id} for stream '${stream}'.\n`);
      return 1;
    }
    out(flags.json ? JSON.stringify(printable(letter)) : Object.entries(printable(letter)).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(' ') : String(v)}`).join('\n'));
    return 0;
  }
  const ids = flags.all ? (await deadLetters.list(stream, { count: 100_000 })).map((l) => l.id) : id ? [id] : [];
  if (ids.length === 0) return flags.all ? (out('nothing to do'), 0) : fail(`dlq ${action} needs a dead letter id or --all.`);
  let missing = 0;
  for (const each of ids) {
    if (action === 'retry') {
      const newId = await deadLetters.retry(stream, each);
      if (newId) out(`${each} -> ${stream} ${newId}`);
      else missing++;
    } else if (await deadLetters.drop(stream, each)) out(`dropped ${each}`);
    else missing++;
  }
  if (missing > 0) process.stderr.write(`${missing} dead letter(s) not found.\n`);
  return missing > 0 ? 1 : 0;
}
