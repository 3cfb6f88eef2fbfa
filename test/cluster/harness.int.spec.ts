import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { keySlot, useTestCluster } from '../support/cluster.ts';

/**
 * The Redis Cluster test harness itself: a 3-master cluster with a replica per master starts,
 * serves keys on all three masters, moves slots with their keys, promotes a replica, and stops
 * without leaving a process or a file behind.
 */
describe('test cluster harness', () => {
  const ctx = useTestCluster({ masters: 3, replicas: 1 });
  // Keys spread over the three masters (found below), each with a value to follow through the moves.
  const keys = Array.from({ length: 30 }, (_, i) => `harness-key-${i}`);

  it('starts 3 masters with one replica each, covering all 16384 slots', async () => {
    const { cluster } = ctx;
    expect(cluster.ports).toHaveLength(6);
    const masters = await cluster.masters();
    const replicas = await cluster.replicas();
    expect(masters).toHaveLength(3);
    expect(replicas).toHaveLength(3);
    expect(new Set(replicas.map((r) => r.master))).toEqual(new Set(masters));
    const slots = (await cluster.topology()).flatMap((n) => n.slots).reduce((n, [a, b]) => n + b - a + 1, 0);
    expect(slots).toBe(16_384);
    for (const port of cluster.ports) {
      expect(await cluster.command(port, 'CLUSTER', 'INFO')).toMatch(/^cluster_state:ok\s*$/m);
      expect(cluster.pid(port)).toBeGreaterThan(0);
    }
  });

  it('computes slots as Redis does and names the node of a key', async () => {
    const { cluster } = ctx;
    const node = cluster.nodeClient(cluster.ports[0] as number);
    for (const key of [
      'user_updates',
      'redsource:{user_updates}:versions',
      'user_snapshot_1',
      '{}x',
      'a{b}c{d}',
      'ü{}',
      'foo{bar}{zap}',
      '{group:g}',
    ]) {
      expect(keySlot(key), key).toBe(await node.cluster('KEYSLOT', key));
    }
    expect(keySlot('redsource:{user_updates}:p:g:3')).toBe(keySlot('user_updates'));

    const client = cluster.client();
    for (const key of keys) await client.set(key, `v-${key}`);
    const owners = new Map<number, string[]>();
    for (const key of keys) {
      const port = await cluster.nodeForKey(key);
      owners.set(port, [...(owners.get(port) ?? []), key]);
      // The owner serves it; any other master answers MOVED to it.
      expect(await cluster.command(port, 'GET', key)).toBe(`v-${key}\n`);
    }
    expect(owners.size).toBe(3);
    const [first] = keys;
    const owner = await cluster.nodeForKey(first as string);
    const other = (await cluster.masters()).find((p) => p !== owner) as number;
    expect(await cluster.command(other, 'GET', first as string)).toMatch(
      new RegExp(`MOVED ${keySlot(first as string)} 127\\.0\\.0\\.1:${owner}`),
    );
  });

  it('reshards: slots move with their keys and every key stays readable', async () => {
    const { cluster } = ctx;
    const [a, b] = await cluster.masters();
    const count = async (port: number) =>
      (await cluster.topology()).find((n) => n.port === port)?.slots.reduce((n, [x, y]) => n + y - x + 1, 0) ?? 0;
    const [beforeA, beforeB] = [await count(a as number), await count(b as number)];
    await cluster.reshard(a as number, b as number, 200);
    expect(await count(a as number)).toBe(beforeA - 200);
    expect(await count(b as number)).toBe(beforeB + 200);

    // One given slot, keys included, to another master.
    const key = keys[1] as string;
    const from = await cluster.nodeForKey(key);
    const to = (await cluster.masters()).find((p) => p !== from) as number;
    await cluster.moveSlot(keySlot(key), to);
    expect(await cluster.nodeForKey(key)).toBe(to);
    expect(await cluster.command(to, 'GET', key)).toBe(`v-${key}\n`);

    const client = cluster.client();
    for (const k of keys) expect(await client.get(k)).toBe(`v-${k}`);
  });

  it('fails over: a replica becomes the master of its slots, keys and clients follow', async () => {
    const { cluster } = ctx;
    const key = keys[2] as string;
    const master = await cluster.nodeForKey(key);
    const replica = (await cluster.replicas()).find((r) => r.master === master);
    expect(replica).toBeDefined();
    const client = cluster.client();
    expect(await client.get(key)).toBe(`v-${key}`);

    await cluster.failover(replica?.port as number);
    expect(await cluster.nodeForKey(key)).toBe(replica?.port);
    expect((await cluster.replicas()).find((r) => r.port === master)?.master).toBe(replica?.port);
    // The client learns the new master from a MOVED reply (or its slots refresh) and reads and writes on.
    expect(await client.get(key)).toBe(`v-${key}`);
    await client.set(key, 'after-failover');
    expect(await cluster.command(replica?.port as number, 'GET', key)).toBe('after-failover\n');
  });

  it('stop() kills every node by pid and removes its directory', async () => {
    const { cluster } = ctx;
    const pids = cluster.ports.map((p) => cluster.pid(p) as number);
    await cluster.stop();
    for (const pid of pids) expect(alive(pid), `pid ${pid}`).toBe(false);
    expect(existsSync(cluster.dir)).toBe(false);
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
