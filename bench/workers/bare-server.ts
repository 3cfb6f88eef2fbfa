/**
 * The baseline of benchmark 6: a bare Fastify route doing one ioredis HGETALL of the snapshot key
 * and returning the hash as it is (no validation, no decoding, no response schema).
 *
 * argv: redisUrl keyPrefix
 */
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import { arg, nextMessage, post, runWorker } from '../support/worker-side.ts';

runWorker(async () => {
  const redis = new Redis(arg(0, 'redisUrl'), { connectionName: 'bench:bare-fastify' });
  const keyPrefix = arg(1, 'keyPrefix');
  const app = Fastify({ logger: false });
  app.get<{ Params: { id: string } }>('/users/:id/profile', async (request) =>
    redis.hgetall(`${keyPrefix}${request.params.id}`),
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  post({ type: 'ready' });
  post({ type: 'listening', port: typeof address === 'object' && address ? address.port : 0 });
  await nextMessage('stop');
  await app.close();
  post({ type: 'stopped' });
  redis.disconnect();
});
