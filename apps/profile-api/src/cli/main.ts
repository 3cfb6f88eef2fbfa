#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { pino, type Logger as Pino } from 'pino';
import { describeRedisUnavailable } from '@redsource/event-store';
import { DeadLetters, RebuildLeaseLostError, RebuildRunningError, rebuildState, replay, streamStatus, type StreamStatus, type ReplayProgress, type RunningRebuild } from '@redsource/processor';
import { loadConfig, type AppConfig } from '../config.ts';
import { buildApp } from '../http/app.ts';
import { edgeOptions } from '../http/edge.ts';
import { appendSeedEvents, profileComponents } from '../runtime/components.ts';
import { createRedactor, redactingLoggerOptions, urlSecrets } from '../runtime/redact.ts';
import { connectRedis, redisTls, resolveRedis, unavailableKindOf } from '../runtime/redis.ts';
import { DLQ_USAGE, runDlq } from './dlq.ts';
import { progressReporter } from './progress.ts';
import { renderStatus } from './status.ts';

const USAGE = `Usage: redsource <command> [options]

Commands:
  serve [--demo]   API and processor in one process (what \`pnpm start\` runs; --demo appends the seed events first)
  api              the HTTP API only
  process          a processor only (run several: each gets its own consumer name)
  replay [--users 1,2] [--wait]
                   rebuild snapshots from the streams while the API keeps serving (resumes if interrupted);
                   one at a time: another running one is named and this exits 1, or --wait waits for it
  seed             append the seed document's five example events (idempotent)
  status [--json]  per stream: length, lag, pending, applied, dead-lettered, consumers, timings
  dlq              dead-lettered entries:
${DLQ_USAGE.replace(/^/gm, '                   ')}

Environment: REDIS_URL, PORT (3000), HOST (127.0.0.1), LOG_LEVEL (info) and more: see the README.`;

/** Everything this process prints or logs passes through it: REDIS_URL's password is known before the config is parsed. */
const redactor = createRedactor(urlSecrets(process.env['REDIS_URL']));

type Command = 'serve' | 'api' | 'process' | 'replay' | 'seed' | 'dlq' | 'status';
const COMMANDS: readonly Command[] = ['serve', 'api', 'process', 'replay', 'seed', 'dlq', 'status'];

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: {
      demo: { type: 'boolean' },
      json: { type: 'boolean' },
      all: { type: 'boolean' },
      users: { type: 'string' },
      wait: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const command = positionals[0];
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined && !values.help ? 2 : 0;
  }
  if (!COMMANDS.includes(command as Command)) {
    process.stderr.write(`Unknown command '${command}'.\n\n${USAGE}\n`);
    return 2;
  }
  const config = loadConfig();
  const logger = pino({ level: config.LOG_LEVEL, ...redactingLoggerOptions(redactor) }, pino.destination(2));
  const target = await resolveRedis(config, logger);
  logger.info({ source: target.source }, `using Redis (${target.source})`);
  const redis = connectRedis(target.url, `redsource:${command}`, redisTls(config));
  // A one-shot command reports its failure in one line at the end; a service keeps running and says so as it happens.
  const service = command === 'serve' || command === 'api' || command === 'process';
  redis.on('error', (error: Error) => logger[service ? 'warn' : 'debug']({ err: error.message }, 'redis connection error'));
  const components = profileComponents(config, redis);
  // A processor's last error is stored in Redis and shown by `status`, /dashboard and /metrics: redacted on the way out.
  const readStatus = async () =>
    redactor.value(await streamStatus({ redis, snapshots: components.snapshots, group: config.REDSOURCE_GROUP, streams: components.streamNames })) as StreamStatus[];
  const closers: (() => Promise<unknown>)[] = [() => redis.quit().catch(() => redis.disconnect()), target.stop];

  try {
    switch (command as Command) {
      case 'seed': {
        const added = await appendSeedEvents(components);
        process.stdout.write(`appended ${added} seed event(s) (${5 - added} already there)\n`);
        return 0;
      }
      case 'status': {
        const rows = await readStatus();
        process.stdout.write(`${values.json ? JSON.stringify(rows, null, 2) : renderStatus(rows, config.REDSOURCE_GROUP)}\n`);
        return 0;
      }
      case 'dlq': {
        return await runDlq(new DeadLetters(redis), components.streamNames, positionals.slice(1), {
          json: values.json === true,
          all: values.all === true,
        });
      }
      case 'replay': {
        const progress = progressReporter();
        const { eventStore, snapshots, handlers } = components;
        const only = values.users?.split(',').map((id) => id.trim()).filter((id) => id.length > 0);
        const lease = {
          ...(config.REDSOURCE_REBUILD_LEASE_MS === undefined ? {} : { leaseMs: config.REDSOURCE_REBUILD_LEASE_MS }),
          ...(config.REDSOURCE_REBUILD_RENEW_MS === undefined ? {} : { renewMs: config.REDSOURCE_REBUILD_RENEW_MS }),
        };
        const onWaiting = (r: RunningRebuild) =>
          process.stderr.write(`redsource: waiting for the running rebuild (host ${r.host}, pid ${r.pid}, started ${new Date(r.startedAt).toISOString()}, phase ${r.phase})\n`);
        let result: ReplayProgress;
        try {
          result = await replay({ redis, eventStore, snapshots, handlers, logger, ...(only ? { only } : {}), wait: values.wait === true, lease, onWaiting, onProgress: (p) => progress.update(p) });
        } catch (error) {
          // Another rebuild running, or this one taken over: expected outcomes, one line with the code to grep for.
          if (!(error instanceof RebuildRunningError || error instanceof RebuildLeaseLostError)) throw error;
          process.stderr.write(`redsource: ${error.code}: ${error.message}\n`);
          return 1;
        }
        progress.finish(result);
        process.stdout.write(
          `replayed ${result.done} entries (${result.applied} applied, ${result.stepped} dead-lettered) and switched ${result.switched} snapshots over in ${result.elapsedMs} ms\n`,
        );
        return 0;
      }
      case 'serve':
      case 'api':
      case 'process':
        return await runService(command as 'serve' | 'api' | 'process', config, components, logger, redis, values.demo === true, closers, readStatus);
    }
  } finally {
    for (const close of closers.reverse()) await close();
  }
  return 0;
}

async function runService(
  command: 'serve' | 'api' | 'process',
  config: AppConfig,
  components: ReturnType<typeof profileComponents>,
  logger: Pino,
  redis: ReturnType<typeof connectRedis>,
  demo: boolean,
  closers: (() => Promise<unknown>)[],
  readStatus: () => Promise<readonly StreamStatus[]>,
): Promise<number> {
  if (demo) {
    // The service still comes up without Redis (not ready until it answers); only the demo data waits for a restart.
    await appendSeedEvents(components).then(
      (appended) => logger.info({ appended }, 'demo data: seed events appended'),
      (error: unknown) => logger.warn({ err: String(error) }, 'demo data not appended: Redis did not answer'),
    );
  }
  const processor = command === 'api' ? undefined : components.createProcessor(logger.child({ component: 'processor' }));
  if (processor) {
    await processor.start();
    closers.push(() => processor.stop());
  }
  if (command !== 'process') {
    const app = await buildApp({
      snapshots: components.snapshots,
      streams: components.streamNames,
      ...edgeOptions(config),
      logger: logger.child({ component: 'http' }),
      readiness: async () => ({ redis: redis.status === 'ready', processor: processor?.running, waiting: processor?.waiting?.reason }),
      rebuild: () => rebuildState(redis, components.snapshots),
      status: readStatus,
    });
    await app.listen({ port: config.PORT, host: config.HOST });
    logger.info(`profile API listening on http://${config.HOST}:${config.PORT} (try: curl http://${config.HOST}:${config.PORT}/users/1/profile)`);
    closers.push(() => app.close());
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  logger.info({ signal }, 'shutting down: finishing the batch in hand');
  return 0;
}

/**
 * Any failure as one line on stderr (the stack too only with LOG_LEVEL=debug or trace), through the
 * redaction: a Redis error names what Redis is doing, never the failed command's arguments.
 */
function failureLine(error: unknown): string {
  const verbose = ['debug', 'trace'].includes(process.env['LOG_LEVEL'] ?? '');
  const kind = unavailableKindOf(error);
  const message = redactor.message(error).split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
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
