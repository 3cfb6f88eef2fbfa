import { spawn } from 'node:child_process';
import type { Redis } from 'ioredis';
import { clusterOptions, parseRedisSeeds } from '../../apps/profile-api/src/runtime/redis-connection.ts';
import { startTestCluster, type TestCluster } from '../../test/support/cluster.ts';
import { stopProcess, track } from './children.ts';

/**
 * A Redis Cluster of the bench's own: 3 masters (no replicas: a replica would take CPU of its own
 * on these 2 cores and change nothing the bench measures), redis-server from PATH on free ports,
 * no persistence, built by test/support/cluster.ts (`redis-cli --cluster create`, the default even
 * split of the 16384 slots). Never the shared 6379. Stopped by pid: the harness kills each node by
 * its pid, and should the bench be SIGKILLed (no exit handler runs) a watcher kills them.
 */
export interface BenchCluster {
  readonly cluster: TestCluster;
  /** Every node, comma-separated: what REDIS_URL would say. */
  readonly seeds: string;
  /** The masters in slot order (A serves slot 0), with the pid of each redis-server. */
  readonly masters: readonly ClusterMaster[];
  /** A Cluster client with the app's cluster options, typed as `Redis` as the app passes it. */
  client(name: string): Redis;
  /** A plain connection to one master (INFO, CONFIG RESETSTAT of that node). */
  node(port: number): Redis;
  /** The master serving a key now. */
  masterOf(key: string): Promise<ClusterMaster>;
  /** Moves a slot (its keys included) to another master; resolves once every node agrees. */
  moveSlot(slot: number, to: ClusterMaster): Promise<void>;
  /** Index in `masters` of the master serving each slot (a fresh CLUSTER NODES). */
  slotOwners(): Promise<Int8Array>;
  stop(): Promise<void>;
}

export interface ClusterMaster {
  /** A, B, C: in slot order of the cluster as created. */
  readonly name: string;
  readonly port: number;
  readonly pid: number;
}

export async function startBenchCluster(): Promise<BenchCluster> {
  const cluster = await startTestCluster({ masters: 3 });
  const ports = await cluster.masters();
  const masters = ports.map((port, i) => {
    const pid = cluster.pid(port);
    if (pid === undefined) throw new Error(`cluster node on port ${port} has no pid`);
    return { name: String.fromCharCode(65 + i), port, pid };
  });
  const reaper = track(
    spawn(
      'sh',
      [
        '-c',
        `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -9 ${masters.map((m) => m.pid).join(' ')} 2>/dev/null`,
      ],
      { stdio: 'ignore', detached: true },
    ),
  );
  const byPort = (port: number) => {
    const master = masters.find((m) => m.port === port);
    if (!master) throw new Error(`port ${port} is not one of the bench cluster's masters`);
    return master;
  };
  return {
    cluster,
    seeds: cluster.seeds,
    masters,
    client: (name) =>
      cluster.client(clusterOptions(parseRedisSeeds(cluster.seeds), name, undefined)) as unknown as Redis,
    node: (port) => cluster.nodeClient(port),
    masterOf: async (key) => byPort(await cluster.nodeForKey(key)),
    moveSlot: (slot, to) => cluster.moveSlot(slot, to.port),
    async slotOwners() {
      const owners = new Int8Array(16_384).fill(-1);
      for (const node of await cluster.topology()) {
        if (node.role !== 'master') continue;
        const index = masters.findIndex((m) => m.port === node.port);
        for (const [a, b] of node.slots) owners.fill(index, a, b + 1);
      }
      return owners;
    },
    async stop() {
      await cluster.stop();
      await stopProcess(reaper, 1_000);
    },
  };
}
