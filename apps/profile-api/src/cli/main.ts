#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import type { Logger as Pino } from 'pino';
import { describeRedisUnavailable } from '@redsource/event-store';
import { DeadLetters, streamStatus, type StreamStatus } from '@redsource/processor';
import { loadConfig, type AppConfig } from '../config.ts';
import { appendSeedEvents, profileComponents } from '../runtime/components.ts';
import { createRedactor, urlSecrets } from '../runtime/redact.ts';
import { createLogger } from '../runtime/logger.ts';
import { openRedis } from '../runtime/open-redis.ts';
import type { connectRedis } from '../runtime/redis.ts';
import { unavailableKindOf } from '../runtime/redis.ts';
import type { RedisWatch } from '../runtime/redis-watch.ts';
import { startService } from '../runtime/service.ts';
import { dlqCommand } from './dlq.ts';
import { runReplay } from './replay.ts';
import { renderStatus } from './status.ts';
import { untilStopRequested } from './stop.ts';
import { EXIT, parseUserIds, UsageError } from './usage.ts';

const HELP_AFTER = `
Environment: REDIS_URL, PORT (3000), HOST (127.0.0.1), LOG_LEVEL (info) and more: see the README.
Exit codes: 0 done; 1 failed (Redis unreachable or refusing, bad configuration, a rebuild running,
a dead letter not found; one line on stderr, the stack too with LOG_LEVEL=debug); 2 bad command line
(unknown command or option, missing or invalid argument; nothing was done).`;

/** Everything this process prints or logs passes through it: REDIS_URL's password is known before the config is parsed. */
const redactor = createRedactor(urlSecrets(process.env['REDIS_URL']));

/** What every command works with, opened once its command line is valid. */
interface Context {
  readonly config: AppConfig;
  readonly logger: Pino;
  readonly redis: ReturnType<typeof connectRedis>;
  readonly watch: RedisWatch;
  readonly components: ReturnType<typeof profileComponents>;
  readonly readStatus: () => Promise<StreamStatus[]>;
  readonly closers: (() => Promise<unknown>)[];
}

let exitCode: number = EXIT.ok;

/** Opens the configuration, the logger and Redis for `command`, runs `body`, closes everything and records the exit code. */
async function withContext(command: string, body: (ctx: Context) => Promise<number>): Promise<void> {
  const config = loadConfig();
  // pino-pretty on a terminal, JSON lines otherwise (runtime/logger.ts).
  const logger = createLogger({ level: config.LOG_LEVEL, redactor });
  // A one-shot command reports its failure in one line at the end; a service keeps running and says so as it happens.
  const service = command === 'serve' || command === 'api' || command === 'process';
  const { redis, watch, close } = await openRedis(command, config, logger, service);
  const components = profileComponents(config, redis);
  // A processor's last error is stored in Redis and shown by `status`, /dashboard and /metrics: redacted on the way out.
  const readStatus = async () =>
    redactor.value(
      await streamStatus({
        redis,
        snapshots: components.snapshots,
        group: config.REDSOURCE_GROUP,
        streams: components.streamNames,
        partitions: components.partitioning.partitions,
        subjectFields: components.partitioning.subjectFields,
      }),
    ) as StreamStatus[];
  const closers: (() => Promise<unknown>)[] = [close];
  try {
    exitCode = await body({ config, logger, redis, watch, components, readStatus, closers });
  } catch (error) {
    throw watch.explain(error);
  } finally {
    for (const close of closers.reverse()) await close();
  }
}

function buildProgram(): Command {
  const program = new Command('redsource')
    .usage('<command> [options]')
    .description(
      'The profile service on redsource: run it, rebuild its snapshots, inspect its streams and dead letters.',
    )
    .addHelpText('after', HELP_AFTER)
    .showSuggestionAfterError();
  const service = (name: 'serve' | 'api' | 'process', demo = false) =>
    withContext(name, (c) =>
      runService(name, c.config, c.components, c.logger, c.redis, c.watch, demo, c.closers, c.readStatus),
    );
  program
    .command('serve')
    .description('API and processor in one process (what `pnpm start` runs)')
    .option('--demo', "append the seed document's five events first (idempotent)")
    .action((opts: { demo?: boolean }) => service('serve', opts.demo === true));
  program
    .command('api')
    .description('the HTTP API only')
    .action(() => service('api'));
  program
    .command('process')
    .description('a processor only (run several: each gets its own consumer name)')
    .action(() => service('process'));
  program
    .command('replay')
    .description(
      'rebuild the snapshots from the streams while the API keeps serving (resumes if interrupted); one at a time',
    )
    .option('--users <ids>', "only these users' snapshots, comma-separated ids (1-64 of A-Z a-z 0-9 _ -)", parseUserIds)
    .option('--wait', 'if another rebuild is running, wait for it instead of exiting 1')
    .action((opts: { users?: string[]; wait?: boolean }) =>
      withContext('replay', (c) => runReplay(c.redis, c.components, c.config, c.logger, opts)),
    );
  program
    .command('seed')
    .description("append the seed document's five example events (idempotent)")
    .action(() =>
      withContext('seed', async ({ components }) => {
        const added = await appendSeedEvents(components);
        process.stdout.write(`appended ${added} seed event(s) (${5 - added} already there)\n`);
        return EXIT.ok;
      }),
    );
  program
    .command('status')
    .description(
      'per stream: length, lag, unapplied, applied, dead-lettered; per partition: owner, cursor, unapplied; the processors',
    )
    .option('--json', 'the rows as one JSON array on stdout')
    .action((opts: { json?: boolean }) =>
      withContext('status', async ({ readStatus, config }) => {
        const rows = await readStatus();
        process.stdout.write(
          `${opts.json ? JSON.stringify(rows, null, 2) : renderStatus(rows, config.REDSOURCE_GROUP)}\n`,
        );
        return EXIT.ok;
      }),
    );
  program.addCommand(
    dlqCommand((body) =>
      withContext('dlq', ({ redis, components }) =>
        body({ deadLetters: new DeadLetters(redis), streams: components.streamNames }),
      ),
    ),
  );
  forEachCommand(program, (command) =>
    command
      .exitOverride()
      .configureOutput({ outputError: (text, write) => write(`redsource: ${text.replace(/^error: /, '')}`) }),
  );
  return program;
}

function forEachCommand(command: Command, each: (command: Command) => void): void {
  each(command);
  for (const sub of command.commands) forEachCommand(sub, each);
}

/** A command line that cannot run: no command, an unknown command or option, a missing argument get the usage too. */
const USAGE_TOO = new Set([
  'commander.help',
  'commander.invalidArgument',
  'commander.unknownCommand',
  'commander.unknownOption',
  'commander.excessArguments',
  'commander.missingArgument',
  'commander.optionMissingArgument',
]);

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`redsource: ${error.message}\n`);
      return EXIT.usage;
    }
    if (!(error instanceof CommanderError)) throw error;
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return EXIT.ok;
    if (USAGE_TOO.has(error.code) && error.code !== 'commander.help')
      process.stderr.write(`\n${usageOf(program, argv)}`);
    return EXIT.usage;
  }
}

/** The help of the deepest command named on the command line (`redsource dlq list --bogus`: dlq list's). */
function usageOf(program: Command, argv: readonly string[]): string {
  let command = program;
  for (const word of argv) {
    const sub = command.commands.find((c) => c.name() === word);
    if (sub) command = sub;
    else if (!word.startsWith('-')) break;
  }
  return command.helpInformation();
}

async function runService(
  command: 'serve' | 'api' | 'process',
  config: AppConfig,
  components: ReturnType<typeof profileComponents>,
  logger: Pino,
  redis: ReturnType<typeof connectRedis>,
  watch: RedisWatch,
  demo: boolean,
  closers: (() => Promise<unknown>)[],
  readStatus: () => Promise<readonly StreamStatus[]>,
): Promise<number> {
  const deadLetters = new DeadLetters(redis);
  const app = { deadLetters: (stream: string, count: number) => deadLetters.list(stream, { count }) };
  closers.push(await startService({ command, config, components, logger, redis, watch, demo, readStatus, app }));
  // A signal, or the launcher gone (see untilStopRequested); past 15 s of closing, close-with-grace exits with 1.
  const reason = await untilStopRequested(logger, 15_000);
  if ('err' in reason) logger.error({ err: reason.err }, 'uncaught error: shutting down');
  else logger.info(reason, 'shutting down: finishing the batch in hand');
  return 'err' in reason ? EXIT.failed : EXIT.ok;
}

/**
 * Any failure as one line on stderr (the stack too only with LOG_LEVEL=debug or trace), through the
 * redaction: a Redis error names what Redis is doing, never the failed command's arguments.
 */
function failureLine(error: unknown): string {
  const verbose = ['debug', 'trace'].includes(process.env['LOG_LEVEL'] ?? '');
  const kind = unavailableKindOf(error);
  const message = redactor
    .message(error)
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const [first = 'failed', ...rest] = message;
  let line = rest.length > 0 ? `${first} ${rest.join('; ')}` : first;
  if (kind) line = `${describeRedisUnavailable(kind)}: ${line}`;
  const stack = verbose && error instanceof Error && error.stack ? `\n${redactor.text(error.stack)}` : '';
  return `redsource: ${line}${stack}\n`;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(failureLine(error));
    process.exit(1);
  },
);
