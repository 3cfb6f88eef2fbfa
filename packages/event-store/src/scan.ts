import type { Cluster, Redis } from 'ioredis';

export interface ScanKeysOptions {
  /** SCAN's MATCH glob (default every key); escape the literal parts with `globEscape`. */
  readonly match?: string;
  /** SCAN's TYPE filter: `hash`, `stream`, ... (default any type). */
  readonly type?: string;
  /** SCAN's COUNT hint: keys looked at per call (default 1000). */
  readonly count?: number;
}

/**
 * Every key that matches, in batches as SCAN returns them (SCAN, never KEYS: Redis is never blocked
 * for long). SCAN only sees the node it runs on, so on a Redis Cluster (an ioredis Cluster client,
 * passed where `Redis` is typed) every master is scanned in turn. What SCAN promises holds per node:
 * a key there from start to end is returned (perhaps more than once); a key added or removed
 * meanwhile may or may not be. On a cluster, so is a key whose slot moves to another master while
 * the scan runs (a reshard, a failover): callers must not conclude from a key's absence that it
 * does not exist, except where nothing can move it.
 */
export async function* scanKeys(redis: Redis | Cluster, options: ScanKeysOptions = {}): AsyncGenerator<string[]> {
  const args: (string | number)[] = ['MATCH', options.match ?? '*', 'COUNT', options.count ?? 1_000];
  if (options.type !== undefined) args.push('TYPE', options.type);
  const nodes = await scanned(redis);
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = (await node.call('SCAN', cursor, ...args)) as [string, string[]];
      if (keys.length > 0) yield keys;
      cursor = next;
    } while (cursor !== '0');
  }
}

/** The nodes to scan: the client itself, or every master of a cluster. */
async function scanned(redis: Redis | Cluster): Promise<Redis[]> {
  if (!isCluster(redis)) return [redis as Redis];
  const cluster = redis as Cluster;
  // A Cluster client that has not loaded the slots yet knows no master: one command waits for that
  // (TIME: the processor and replay ACL roles may run it). Scanning no node would find nothing and say so.
  if (cluster.nodes('master').length === 0) await cluster.time();
  const masters = cluster.nodes('master');
  if (masters.length === 0) throw new Error('scanKeys: the Redis Cluster client knows no master node');
  return masters;
}

/** Text as a SCAN MATCH glob that matches exactly it: `*`, `?`, `[`, `]` and `\` escaped. */
export function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/** An ioredis Cluster client says so itself; a plain client has no such property. */
export function isCluster(redis: Redis | Cluster): boolean {
  return (redis as { isCluster?: boolean }).isCluster === true;
}
