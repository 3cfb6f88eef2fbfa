import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { keySlot } from '@redsource/snapshot-store';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Redis, type ClusterOptions } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';
import { freePort, pings } from './net.ts';

/**
 * A throwaway Redis Cluster for one test file: `masters` redis-servers from PATH (3 by default),
 * optionally one replica per master, on free loopback ports in a temp dir, no persistence unless
 * `aof` (then a killed node restarts with its data and its nodes.conf: the same node, slots and keys). Built
 * with `redis-cli --cluster create`, so it is the cluster an operator would build. Helpers move
 * slots (`reshard`, `moveSlot`), promote a replica (`failover`), crash a node (`kill`), and tell
 * which node owns a key (`nodeForKey`). `stop()` kills every node by pid and removes the dir.
 */
export interface TestCluster {
  readonly host: '127.0.0.1';
  /** Every node's port, masters as created first, then the replicas. */
  readonly ports: readonly number[];
  /** `redis://[:password@]127.0.0.1:<port>` of the first node. */
  readonly url: string;
  /** Every node as a comma-separated list of URLs (what a seed list in REDIS_URL looks like). */
  readonly seeds: string;
  readonly dir: string;
  readonly password: string | undefined;
  /** The pid of the redis-server on `port`; undefined once it was killed. */
  pid(port: number): number | undefined;
  /** The cluster as the first live node sees it (CLUSTER NODES). */
  topology(): Promise<ClusterNode[]>;
  /** Ports of the current masters (those serving slots), in ascending slot order. */
  masters(): Promise<number[]>;
  /** Ports of the current replicas, with the port of each one's master. */
  replicas(): Promise<{ port: number; master: number }[]>;
  /** The hash slot of a key (CRC16 of its hash tag or whole name, mod 16384), as Redis computes it. */
  slotOf(key: string): number;
  /** The port of the master serving the key's slot now. */
  nodeForKey(key: string): Promise<number>;
  nodeForSlot(slot: number): Promise<number>;
  /** Moves `slots` slots (with their keys) from one master to another (`redis-cli --cluster reshard`); resolves once every node agrees. */
  reshard(fromPort: number, toPort: number, slots: number): Promise<void>;
  /** Moves one slot, keys included, to another master (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE); resolves once every node agrees. */
  moveSlot(slot: number, toPort: number): Promise<void>;
  /**
   * Promotes a replica: CLUSTER FAILOVER on it (coordinated with its master, no write is lost);
   * `force` when its master is down, `takeover` without the other masters' agreement. Resolves once
   * it is a master and every live node agrees.
   */
  failover(replicaPort: number, mode?: 'default' | 'force' | 'takeover'): Promise<void>;
  /** SIGKILLs one node (a crash): its replica takes over after the node timeout, if it has one. */
  kill(port: number): Promise<void>;
  /** Starts a killed node again on its port and config file (it rejoins; without persistence, empty; with `aof`, with every write it confirmed). */
  restart(port: number): Promise<void>;
  /** Resolves when every live node says cluster_state:ok and all agree on who serves which slots. */
  waitStable(timeoutMs?: number): Promise<void>;
  /** Runs one command on one node (redis-cli) and returns its text reply; errors come back as text. */
  command(port: number, ...args: (string | number)[]): Promise<string>;
  /** A cluster client (ioredis Cluster) of its own, closed by `stop()`. */
  client(options?: ClusterOptions): Cluster;
  /** A plain client of one node (answers MOVED for keys of other nodes), closed by `stop()`. */
  nodeClient(port: number): Redis;
  stop(): Promise<void>;
}

export interface ClusterNode {
  readonly id: string;
  readonly port: number;
  readonly role: 'master' | 'replica';
  /** The master's node id, for a replica. */
  readonly masterId: string | undefined;
  /** Slot ranges served, inclusive: [[0, 5460]]. */
  readonly slots: readonly (readonly [number, number])[];
  /** `fail`, `fail?`, `handshake`, `noaddr`... (CLUSTER NODES flags other than the role and `myself`). */
  readonly flags: readonly string[];
  /** Slots being moved: `[slot->-id]` (migrating) or `[slot-<-id]` (importing), as CLUSTER NODES shows them. */
  readonly migrating: readonly string[];
}

export interface TestClusterOptions {
  /** Masters (default 3; Redis Cluster needs at least 3). */
  readonly masters?: number;
  /** Replicas per master: 0 (default) or more. */
  readonly replicas?: number;
  /** cluster-node-timeout (default 5000 ms): how long until a dead node is failed over. */
  readonly nodeTimeoutMs?: number;
  /** requirepass and masterauth of every node; the harness' own clients use it. */
  readonly password?: string;
  /**
   * Append-only file on every node, fsynced before each write is confirmed (appendfsync always, as
   * the single-Redis fault suite runs it), each node in a directory of its own under `dir`: a node
   * killed and restarted (`kill`, `restart`) comes back with every write it confirmed.
   */
  readonly aof?: boolean;
}

const HOST = '127.0.0.1';
const ADMIN_TIMEOUT_MS = 10_000;

export async function startTestCluster(options: TestClusterOptions = {}): Promise<TestCluster> {
  const masterCount = options.masters ?? 3;
  const replicaCount = options.replicas ?? 0;
  const password = options.password;
  const dir = mkdtempSync(join(tmpdir(), 'redsource-test-cluster-'));
  const ports: number[] = [];
  while (ports.length < masterCount * (1 + replicaCount)) {
    const port = await freePort();
    // The cluster bus listens on port + 10000: both must be free (and distinct from the others').
    if (port + 10_000 > 65_535 || ports.includes(port) || ports.some((p) => Math.abs(p - port) === 10_000)) continue;
    if (!(await portFree(port + 10_000))) continue;
    ports.push(port);
  }
  const children = new Map<number, ChildProcess>();
  const clients: (Redis | Cluster)[] = [];
  const auth = password === undefined ? [] : ['-a', password, '--no-auth-warning'];
  const onExit = () => {
    for (const child of children.values()) child.kill('SIGKILL');
  };
  process.once('exit', onExit);

  const serverArgs = (port: number) => [
    '--port',
    String(port),
    '--bind',
    HOST,
    '--dir',
    dir,
    '--daemonize',
    'no',
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    `nodes-${port}.conf`,
    '--cluster-node-timeout',
    String(options.nodeTimeoutMs ?? 5_000),
    '--save',
    '',
    '--logfile',
    `redis-${port}.log`,
    ...(options.aof === true
      ? ['--appendonly', 'yes', '--appendfsync', 'always', '--appenddirname', `appendonlydir-${port}`]
      : ['--appendonly', 'no']),
    ...(password === undefined ? [] : ['--requirepass', password, '--masterauth', password]),
  ];
  const startNode = async (port: number) => {
    const child = spawn('redis-server', serverArgs(port), { stdio: 'ignore' });
    children.set(port, child);
    child.once('exit', () => {
      if (children.get(port) === child) children.delete(port);
    });
    for (let i = 0; i < 200; i++) {
      if (await pings(port).catch(() => false)) return;
      // A password-protected node answers PING with NOAUTH, which `pings` counts as no answer.
      if (password !== undefined && (await cli(port, 'PING')).trim() === 'PONG') return;
      if (child.exitCode !== null || child.signalCode !== null) break;
      await sleep(25);
    }
    throw new Error(`redis-server (cluster node) on port ${port} did not start; see ${join(dir, `redis-${port}.log`)}`);
  };

  function cli(port: number, ...args: (string | number)[]): Promise<string> {
    return run('redis-cli', ['-h', HOST, '-p', String(port), ...auth, ...args.map(String)]);
  }

  const live = () => [...children.keys()];

  async function nodesOf(port: number): Promise<(ClusterNode & { myself: boolean })[]> {
    return parseClusterNodes(await cli(port, 'CLUSTER', 'NODES'));
  }

  async function topology(): Promise<ClusterNode[]> {
    for (const port of live()) {
      const nodes = await nodesOf(port).catch(() => []);
      if (nodes.length > 0) return nodes.map(({ myself: _, ...node }) => node);
    }
    throw new Error('no live node of the test cluster answers CLUSTER NODES');
  }

  async function nodeId(port: number): Promise<string> {
    const id = (await cli(port, 'CLUSTER', 'MYID')).trim();
    if (!/^[0-9a-f]{40}$/.test(id)) throw new Error(`CLUSTER MYID on port ${port}: ${id}`);
    return id;
  }

  async function nodeForSlot(slot: number): Promise<number> {
    const owner = (await topology()).find(
      (n) => n.role === 'master' && !n.flags.includes('fail') && n.slots.some(([a, b]) => slot >= a && slot <= b),
    );
    if (!owner) throw new Error(`no master of the test cluster serves slot ${slot}`);
    return owner.port;
  }

  /** What a node believes: its cluster_state and who serves which slots, as one comparable string. */
  async function viewOf(
    port: number,
  ): Promise<{ ok: boolean; signature: string; replicas: string; replicaCount: number; moving: boolean }> {
    const [info, nodes] = await Promise.all([cli(port, 'CLUSTER', 'INFO'), nodesOf(port).catch(() => [])]);
    const masters = nodes.filter((n) => n.role === 'master' && n.slots.length > 0 && !n.flags.includes('fail'));
    const replicas = nodes
      .filter((n) => n.role === 'replica' && !n.flags.includes('fail'))
      .map((n) => `${n.id}>${n.masterId ?? '-'}`);
    const signature = masters
      .map((n) => `${n.id}:${n.slots.map(([a, b]) => `${a}-${b}`).join(',')}`)
      .sort()
      .join(' ');
    const failedLive = nodes.filter(
      (n) => n.flags.some((f) => f === 'fail' || f === 'fail?' || f === 'handshake') && children.has(n.port),
    );
    return {
      ok: /^cluster_state:ok\s*$/m.test(info) && failedLive.length === 0,
      signature,
      replicas: replicas.sort().join(' '),
      replicaCount: replicas.length,
      moving: nodes.some((n) => n.migrating.length > 0),
    };
  }

  /** Every live node: cluster_state:ok, no slot moving, and the same masters, slots and replicas (at least `replicasExpected`). */
  async function waitStable(timeoutMs = 20_000, replicasExpected = 0): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      const views = await Promise.all(live().map(viewOf));
      const signatures = new Set(views.map((v) => `${v.signature} | ${v.replicas}`));
      const covered = views[0] ? coversAllSlots(views[0].signature) : false;
      const replicated = (views[0]?.replicaCount ?? 0) >= replicasExpected;
      if (views.length > 0 && views.every((v) => v.ok && !v.moving) && signatures.size === 1 && covered && replicated)
        return;
      last = JSON.stringify(views.map((v, i) => ({ port: live()[i], ok: v.ok, moving: v.moving })));
      if (Date.now() > deadline) throw new Error(`test cluster not stable after ${timeoutMs} ms: ${last}`);
      await sleep(50);
    }
  }

  const mastersFirst = ports.slice(0, masterCount);
  try {
    await Promise.all(ports.map(startNode));
    // Masters first: redis-cli --cluster create makes the first `masters` nodes the masters.
    const created = await run(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...ports.map((p) => `${HOST}:${p}`),
        '--cluster-replicas',
        String(replicaCount),
        '--cluster-yes',
        ...auth,
      ],
      60_000,
    );
    if (!/All 16384 slots covered/.test(created))
      throw new Error(`redis-cli --cluster create failed:\n${created.slice(-2_000)}`);
    await waitStable(20_000, masterCount * replicaCount);
    if (replicaCount > 0) await waitReplicasSynced();
  } catch (error) {
    onExit();
    process.off('exit', onExit);
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }

  /** Replicas have their initial copy (master_link_status:up): a failover before that would lose data or be refused. */
  async function waitReplicasSynced(): Promise<void> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const replicas = (await topology()).filter((n) => n.role === 'replica' && children.has(n.port));
      const infos = await Promise.all(replicas.map((r) => cli(r.port, 'INFO', 'replication')));
      if (infos.every((i) => /^master_link_status:up\s*$/m.test(i) && !/^master_sync_in_progress:1\s*$/m.test(i)))
        return;
      if (Date.now() > deadline) throw new Error('test cluster: replicas did not sync with their masters in 20 s');
      await sleep(50);
    }
  }

  const url = (port: number) =>
    `redis://${password === undefined ? '' : `:${encodeURIComponent(password)}@`}${HOST}:${port}`;

  const cluster: TestCluster = {
    host: HOST,
    ports,
    url: url(ports[0] as number),
    seeds: ports.map(url).join(','),
    dir,
    password,
    pid: (port) => children.get(port)?.pid,
    topology,
    async masters() {
      const nodes = (await topology()).filter(
        (n) => n.role === 'master' && n.slots.length > 0 && !n.flags.includes('fail'),
      );
      return nodes.sort((a, b) => (a.slots[0]?.[0] ?? 0) - (b.slots[0]?.[0] ?? 0)).map((n) => n.port);
    },
    async replicas() {
      const nodes = await topology();
      const portOf = new Map(nodes.map((n) => [n.id, n.port]));
      return nodes
        .filter((n) => n.role === 'replica' && !n.flags.includes('fail'))
        .map((n) => ({ port: n.port, master: portOf.get(n.masterId ?? '') ?? 0 }));
    },
    slotOf: keySlot,
    nodeForKey: (key) => nodeForSlot(keySlot(key)),
    nodeForSlot,
    async reshard(fromPort, toPort, slots) {
      await waitStable();
      const [from, to] = await Promise.all([nodeId(fromPort), nodeId(toPort)]);
      const out = await run(
        'redis-cli',
        [
          '--cluster',
          'reshard',
          `${HOST}:${fromPort}`,
          '--cluster-from',
          from,
          '--cluster-to',
          to,
          '--cluster-slots',
          String(slots),
          '--cluster-yes',
          ...auth,
        ],
        60_000,
      );
      if (/\[ERR\]/.test(out)) throw new Error(`redis-cli --cluster reshard failed:\n${out.slice(-2_000)}`);
      await waitStable();
    },
    async moveSlot(slot, toPort) {
      await waitStable();
      const fromPort = await nodeForSlot(slot);
      if (fromPort === toPort) return;
      const [from, to] = await Promise.all([nodeId(fromPort), nodeId(toPort)]);
      await expectOk(cli(toPort, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from));
      await expectOk(cli(fromPort, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to));
      for (;;) {
        const keys = (await cli(fromPort, 'CLUSTER', 'GETKEYSINSLOT', slot, 100))
          .split('\n')
          .filter((k) => k.length > 0);
        if (keys.length === 0) break;
        const migrate = [
          'MIGRATE',
          HOST,
          toPort,
          '',
          0,
          10_000,
          ...(password === undefined ? [] : ['AUTH', password]),
          'KEYS',
          ...keys,
        ];
        const reply = (await cli(fromPort, ...migrate)).trim();
        if (reply !== 'OK') throw new Error(`MIGRATE of slot ${slot} to ${toPort}: ${reply}`);
      }
      // The new owner first, then the old one, then everyone else (as redis-cli does).
      await expectOk(cli(toPort, 'CLUSTER', 'SETSLOT', slot, 'NODE', to));
      await expectOk(cli(fromPort, 'CLUSTER', 'SETSLOT', slot, 'NODE', to));
      for (const node of await topology()) {
        if (node.role === 'master' && node.port !== toPort && node.port !== fromPort && children.has(node.port)) {
          await cli(node.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to);
        }
      }
      await waitStable();
    },
    async failover(replicaPort, mode = 'default') {
      const before = (await nodesOf(replicaPort)).find((n) => n.myself);
      if (before?.role !== 'replica')
        throw new Error(`port ${replicaPort} is not a replica (it is a ${before?.role ?? 'unknown node'})`);
      if (mode === 'default') await waitReplicasSynced();
      await expectOk(cli(replicaPort, 'CLUSTER', 'FAILOVER', ...(mode === 'default' ? [] : [mode.toUpperCase()])));
      const deadline = Date.now() + 20_000;
      while ((await nodesOf(replicaPort)).find((n) => n.myself)?.role !== 'master') {
        if (Date.now() > deadline) throw new Error(`replica on ${replicaPort} did not become a master within 20 s`);
        await sleep(50);
      }
      await waitStable();
    },
    async kill(port) {
      const child = children.get(port);
      if (!child) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    async restart(port) {
      if (children.has(port)) return;
      await startNode(port);
    },
    waitStable,
    command: cli,
    client(clientOptions = {}) {
      const client = new Cluster(
        mastersFirst.map((port) => ({ host: HOST, port })),
        {
          redisOptions: { ...(password === undefined ? {} : { password }), ...clientOptions.redisOptions },
          clusterRetryStrategy: (times) => Math.min(100 * times, 1_000),
          ...clientOptions,
        },
      );
      client.on('error', () => undefined);
      clients.push(client);
      return client;
    },
    nodeClient(port) {
      const client = new Redis({
        host: HOST,
        port,
        ...(password === undefined ? {} : { password }),
        maxRetriesPerRequest: 3,
        retryStrategy: (n) => Math.min(50 * n, 500),
      });
      client.on('error', () => undefined);
      clients.push(client);
      return client;
    },
    async stop() {
      for (const client of clients.splice(0)) client.disconnect();
      await Promise.all(live().map((port) => cluster.kill(port)));
      process.off('exit', onExit);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return cluster;
}

/** One cluster for the calling file (or describe block): started in `beforeAll`, stopped in `afterAll`. */
export function useTestCluster(options: TestClusterOptions = {}): { readonly cluster: TestCluster } {
  let started: TestCluster | undefined;
  beforeAll(async () => {
    started = await startTestCluster(options);
  }, 60_000);
  afterAll(async () => {
    await started?.stop();
  });
  return {
    get cluster() {
      if (!started) throw new Error('useTestCluster: the cluster starts in beforeAll; use it from hooks and tests');
      return started;
    },
  };
}

/** CLUSTER NODES, parsed; `myself` marks the node that answered. */
export function parseClusterNodes(text: string): (ClusterNode & { myself: boolean })[] {
  const nodes: (ClusterNode & { myself: boolean })[] = [];
  for (const line of text.split('\n')) {
    const parts = line.trim().split(' ');
    if (parts.length < 8 || !/^[0-9a-f]{40}$/.test(parts[0] as string)) continue;
    const [id, address, flagText, master, , , , , ...rest] = parts as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      string,
      ...string[],
    ];
    const port = Number(/:(\d+)@/.exec(address)?.[1] ?? /:(\d+)$/.exec(address)?.[1] ?? 0);
    const flags = flagText.split(',');
    const slots: [number, number][] = [];
    const migrating: string[] = [];
    for (const token of rest) {
      if (token.startsWith('[')) migrating.push(token);
      else if (token.includes('-')) slots.push(token.split('-').map(Number) as [number, number]);
      else if (/^\d+$/.test(token)) slots.push([Number(token), Number(token)]);
    }
    nodes.push({
      id,
      port,
      role: flags.includes('master') ? 'master' : 'replica',
      masterId: master === '-' ? undefined : master,
      slots,
      flags: flags.filter((f) => f !== 'master' && f !== 'slave' && f !== 'myself'),
      migrating,
      myself: flags.includes('myself'),
    });
  }
  return nodes;
}

function coversAllSlots(signature: string): boolean {
  let total = 0;
  for (const node of signature.split(' ')) {
    for (const range of node.slice(node.indexOf(':') + 1).split(',')) {
      const [a, b] = range.split('-').map(Number) as [number, number];
      if (Number.isInteger(a) && Number.isInteger(b)) total += b - a + 1;
    }
  }
  return total === 16_384;
}

async function expectOk(reply: Promise<string>): Promise<void> {
  const text = (await reply).trim();
  if (text !== 'OK') throw new Error(`expected OK, Redis answered: ${text}`);
}

/** A program's stdout and stderr together; a non-zero exit is not an error here (redis-cli prints errors as text). */
function run(file: string, args: string[], timeoutMs = ADMIN_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error && (error as NodeJS.ErrnoException).code === 'ENOENT') reject(new Error(`${file} is not on PATH`));
      else if (error && error.killed)
        reject(new Error(`${file} ${args.slice(0, 6).join(' ')} … timed out after ${timeoutMs} ms`));
      else resolve(`${stdout}${stderr}`);
    });
  });
}

function portFree(port: number): Promise<boolean> {
  return pings(port).then(async (answered) => {
    if (answered) return false;
    const net = await import('node:net');
    return new Promise<boolean>((done) => {
      const server = net.createServer();
      server.once('error', () => done(false));
      server.listen(port, HOST, () => server.close(() => done(true)));
    });
  });
}

/** Redis Cluster's key slot: the snapshot store's own computation (checked against CLUSTER KEYSLOT in test/cluster/harness.int.spec.ts). */
export { keySlot };
