#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { pino, type Logger as Pino } from 'pino';
import { DeadLetters, rebuildState, replay, streamStatus } from '@redsource/processor';
import { ConfigError, loadConfig, type AppConfig } from '../config.ts';
import { buildApp } from '../http/app.ts';
import { edgeOptions } from '../http/edge.ts';
import { appendSeedEvents, profileComponents } from '../runtime/components.ts';
import { connectRedis, RedisUnavailableError, redisTls, resolveRedis } from '../runtime/redis.ts';
import { DLQ_USAGE, runDlq } from './dlq.ts';
import { progressReporter } from './progress.ts';
import { renderStatus } from './status.ts';

const USAGE = `Usage: redsource <command> [options]

Commands:
  serve [--demo]   API and processor in one process (what \`pnpm start\` runs; --demo appends the seed events first)
  api              the HTTP API only
  process          a processor only (run several: each gets its own consumer name)
  replay [--users 1,2]  rebuild snapshots from the streams while the API keeps serving (resumes if interrupted)
  seed             append the seed document's five example events (idempotent)
  status [--json]  per stream: length, lag, pending, applied, dead-lettered, consumers, timings
  dlq              dead-lettered entries:
${DLQ_USAGE.replace(/^/gm, '                   ')}

Environment: REDIS_URL, PORT (3000), HOST (127.0.0.1), LOG_LEVEL (info) and more: see the README.`;

type Command = 'serve' | 'api' | 'process' | 'replay' | 'seed' | 'dlq' | 'status';
const COMMANDS: readonly Command[] = ['serve', 'api', 'process', 'replay', 'seed', 'dlq', 'status'];

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: {
      demo: { type: 'boolean' },
      json: { type: 'boolean' },
      all: { type: 'boolean' },
      users: { type: 'string' },
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
  const logger = pino({ level: config.LOG_LEVEL, redact: ['redisUrl', 'url'] }, pino.destination(2));
  const target = await resolveRedis(config, logger);
  logger.info({ source: target.source }, `using Redis (${target.source})`);
  const redis = connectRedis(target.url, `redsource:${command}`, redisTls(config));
  redis.on('error', (error: Error) => logger.warn({ err: error.message }, 'redis connection error'));
  const components = profileComponents(config, redis);
  const closers: (() => Promise<unknown>)[] = [() => redis.quit().catch(() => redis.disconnect()), target.stop];

  try {
    switch (command as Command) {
      case 'seed': {
        const added = await appendSeedEvents(components);
        process.stdout.write(`appended ${added} seed event(s) (${5 - added} already there)\n`);
        return 0;
      }
      case 'status': {
        const rows = await streamStatus({ redis, snapshots: components.snapshots, group: config.REDSOURCE_GROUP, streams: components.streamNames });
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
        const result = await replay({ redis, eventStore, snapshots, handlers, logger, ...(only ? { only } : {}), onProgress: (p) => progress.update(p) });
        progress.finish(result);
        process.stdout.write(
          `replayed ${result.done} entries (${result.applied} applied, ${result.stepped} dead-lettered) and switched ${result.switched} snapshots over in ${result.elapsedMs} ms\n`,
        );
        return 0;
      }
      case 'serve':
      case 'api':
      case 'process':
        return await runService(command as 'serve' | 'api' | 'process', config, components, logger, redis, values.demo === true, closers);
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
      readiness: async () => ({ redis: redis.status === 'ready', processor: processor?.running }),
      rebuild: () => rebuildState(redis, components.snapshots),
      status: () =>
        streamStatus({
          redis,
          snapshots: components.snapshots,
          group: config.REDSOURCE_GROUP,
          streams: components.streamNames,
        }),
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

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof ConfigError || error instanceof RedisUnavailableError) {
      process.stderr.write(`redsource: ${error.message}\n`);
    } else {
      process.stderr.write(`redsource: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    }
    process.exit(1);
  },
);
