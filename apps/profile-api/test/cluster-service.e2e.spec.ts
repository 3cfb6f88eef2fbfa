import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { cliChildren, isolatedServiceEnv, runCli } from '../../../test/support/cli.ts';
import { useTestCluster } from '../../../test/support/cluster.ts';
import { freePort } from '../../../test/support/net.ts';
import { eventually } from '../../../test/support/redis.ts';

/**
 * The service on a 3-master Redis Cluster, as a user runs it: REDIS_URL names one node (or the
 * seed list), the seed's raw XADDs go to the nodes that own the streams, the profiles come over HTTP.
 */
describe('the service on a Redis Cluster', () => {
  const clusterContext = useTestCluster();
  const children = cliChildren();

  const cli = async (args: string[], env: Record<string, string>) => {
    const run = runCli(args, env);
    children.push(run);
    const code = await Promise.race([run.exited, sleep(20_000).then(() => 'timeout' as const)]);
    return { code, output: run.output() };
  };

  it('serves the seed from raw XADDs, reads its writes; status, dlq and replay work; SIGTERM exits 0', async () => {
    const { cluster } = clusterContext;
    const env = {
      ...isolatedServiceEnv(cluster.url),
      HOST: '127.0.0.1',
      PORT: String(await freePort()),
      REDSOURCE_REBALANCE_MS: '200',
    };
    const serve = runCli(['serve'], env);
    children.push(serve);
    const base = `http://127.0.0.1:${env.PORT}`;
    const client = cluster.client();
    try {
      await client.xadd(
        env.STREAM_UPDATES,
        '*',
        'user_id',
        '1',
        'command',
        'register',
        'name',
        'Duffy',
        'surename',
        'Duck',
      );
      await client.xadd(
        env.STREAM_UPDATES,
        '*',
        'user_id',
        '2',
        'command',
        'register',
        'name',
        'Bugs',
        'surename',
        'Bunny',
      );
      await client.xadd(env.STREAM_ACTIVITY, '*', 'user_id', '1', 'command', 'kick', 'object', 'Bugs');
      await client.xadd(env.STREAM_ACTIVITY, '*', 'user_id', '1', 'command', 'dislike', 'object', 'Bugs face');
      await client.xadd(env.STREAM_FRIENDS, '*', 'user_id', '1', 'command', 'remove', 'friend_id', '2');
      await client.xadd(env.STREAM_UPDATES, '*', 'user_id', '9', 'command', 'bogus');
      const duffy = await eventually(
        async () => {
          const res = await fetch(`${base}/users/1/profile`).catch(() => undefined);
          const body = res?.status === 200 ? ((await res.json()) as { activity?: Record<string, number> }) : undefined;
          return body?.activity?.['dislike'] === 1 ? body : undefined;
        },
        30_000,
        100,
      );
      expect(duffy, serve.output()).toMatchObject({
        id: '1',
        name: 'Duffy',
        surname: 'Duck',
        activity: { kick: 1, dislike: 1 },
      });
      expect((await (await fetch(`${base}/users/2/profile`)).json()) as object).toMatchObject({ surname: 'Bunny' });
      expect((await fetch(`${base}/users/42/profile`)).status).toBe(404);

      // Read your writes: the answer waits for user 1's partition to apply the entry.
      const liked = String(await client.xadd(env.STREAM_ACTIVITY, '*', 'user_id', '1', 'command', 'like', 'page', 'P'));
      const after = await fetch(`${base}/users/1/profile?after=${env.STREAM_ACTIVITY}:${liked}&wait=5000`);
      expect(after.status, serve.output()).toBe(200);
      expect(((await after.json()) as { likedPages: string[] }).likedPages).toEqual(['P']);

      // One-shot commands, with one node and with the seed list.
      const status = await cli(['status', '--json'], { ...env, REDIS_URL: cluster.seeds });
      expect(status.code, status.output).toBe(0);
      expect(status.output).toContain(env.STREAM_UPDATES);
      const dlq = await eventually(
        async () => {
          const run = await cli(['dlq', 'list', env.STREAM_UPDATES, '--json'], env);
          return run.code === 0 && run.output.includes('RS_EVENT_TYPE_UNKNOWN') ? run : undefined;
        },
        15_000,
        200,
      );
      expect(dlq?.output).toContain('bogus');

      // A rebuild while the service runs: the same profiles after the switch.
      const replay = await cli(['replay'], env);
      expect(replay.code, replay.output).toBe(0);
      expect((await (await fetch(`${base}/users/1/profile`)).json()) as object).toMatchObject({
        name: 'Duffy',
        likedPages: ['P'],
        activity: { kick: 1, dislike: 1 },
      });
    } finally {
      client.disconnect();
    }
    serve.child.kill('SIGTERM');
    expect(await serve.exited, serve.output()).toBe(0);
    expect(serve.output()).toMatch(/Redis Cluster/);
    expect(serve.output()).not.toMatch(/CROSSSLOT|non local key|at .*\.ts:\d+/);
  }, 90_000);

  it('with REDIS_URL a seed list: seed appends, `api` and `process` as separate processes serve it; both exit 0 on SIGTERM', async () => {
    const { cluster } = clusterContext;
    const env = {
      ...isolatedServiceEnv(cluster.seeds),
      HOST: '127.0.0.1',
      PORT: String(await freePort()),
      REDSOURCE_REBALANCE_MS: '200',
    };
    const seeded = await cli(['seed'], env);
    expect(seeded.code, seeded.output).toBe(0);
    expect(seeded.output).toContain('appended 5 seed event(s)');
    const api = runCli(['api'], env);
    const processor = runCli(['process'], env);
    children.push(api, processor);
    const base = `http://127.0.0.1:${env.PORT}`;
    const duffy = await eventually(
      async () => {
        const res = await fetch(`${base}/users/1/profile`).catch(() => undefined);
        const body =
          res?.status === 200
            ? ((await res.json()) as { activity?: Record<string, number>; friends?: string[] })
            : undefined;
        return body?.activity?.['dislike'] === 1 && body.friends?.length === 0 ? body : undefined;
      },
      30_000,
      100,
    );
    expect(duffy, `${api.output()}\n${processor.output()}`).toMatchObject({
      id: '1',
      name: 'Duffy',
      surname: 'Duck',
      activity: { kick: 1, dislike: 1 },
    });
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    for (const run of [api, processor]) {
      run.child.kill('SIGTERM');
      expect(await run.exited, run.output()).toBe(0);
      // The start-up line names every seed node, and says it is a cluster.
      expect(run.output()).toContain(
        `using a Redis Cluster, seed nodes ${cluster.ports.map((p) => `127.0.0.1:${p}`).join(', ')}`,
      );
      expect(run.output()).not.toMatch(/CROSSSLOT|non local key|at .*\.ts:\d+/);
    }
  }, 90_000);
});
