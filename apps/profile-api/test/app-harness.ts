import type { FastifyInstance } from 'fastify';
import type { StreamProcessor } from '@redsource/processor';
import { afterEach, beforeAll } from 'vitest';
import { buildApp, type AppOptions } from '../src/http/app.ts';
import type { TestRedisContext } from '../../../test/support/redis.ts';
import { isolatedProfileSetup } from '../../../test/support/profile-setup.ts';

/**
 * Apps built for one test file on its own stream and key names (`setup`), ready and closed after
 * each test. Call after `useTestRedis`, whose `beforeAll` must run first.
 */
export function useProfileApps(ctx: TestRedisContext) {
  let setup: ReturnType<typeof isolatedProfileSetup> | undefined;
  const open: FastifyInstance[] = [];
  beforeAll(() => {
    setup = isolatedProfileSetup(ctx.redis);
  });
  afterEach(async () => {
    for (const a of open.splice(0)) await a.close();
  });
  const current = () => {
    if (!setup) throw new Error('useProfileApps: the setup is made in beforeAll; use it from hooks and tests');
    return setup;
  };
  return {
    get setup() {
      return current();
    },
    get streams(): string[] {
      const { updates, activity, friends } = current().streams;
      return [updates, activity, friends];
    },
    /** A processor of the file's group on a client of its own, started; stopped with the server at the latest. */
    async startProcessor(): Promise<StreamProcessor> {
      const processor = current().processor(ctx.server.client());
      ctx.track(processor);
      await processor.start();
      return processor;
    },
    /** An app on the file's snapshots and streams, reporting ready; `options` override any of it. */
    async app(options: Partial<AppOptions> = {}): Promise<FastifyInstance> {
      const built = await buildApp({
        snapshots: current().snapshots,
        readiness: async () => ({ redis: true, processor: true }),
        streams: this.streams,
        ...options,
      });
      open.push(built);
      return built;
    },
  };
}
