import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { Logger } from './logger.ts';

/**
 * A connection of its own for blocking reads (XREAD BLOCK), so they never delay other commands,
 * that can be woken at once (stop, or new partitions to read) through CLIENT UNBLOCK. On a Redis
 * Cluster the blocked read runs on whichever node owns the stream, where this client's id is
 * another: there it is not woken (`canWake` is false; the caller blocks for shorter) and close()
 * cuts the read off, which loses nothing, as a plain XREAD takes nothing from the stream.
 */
export class BlockingConnection {
  readonly connection: Redis;
  private clientId: number | undefined;
  /** The CLIENT ID request sent when the connection became ready, until it answers. */
  private idRequest: Promise<void> | undefined;

  /** False on a Redis Cluster: see the class comment. */
  readonly canWake: boolean;

  constructor(
    private readonly commands: Redis,
    name: string,
    logger: Logger,
  ) {
    this.canWake = (commands as unknown as { isCluster?: boolean }).isCluster !== true;
    this.connection = this.canWake
      ? commands.duplicate({ connectionName: name })
      : // A Cluster's duplicate() takes cluster options; the connection name goes to each node's connection.
        asCluster(commands).duplicate([], {
          redisOptions: { ...asCluster(commands).options.redisOptions, connectionName: name },
        });
    this.connection.on('error', (error: Error) =>
      logger.debug({ err: error.message, connection: name }, 'blocking connection error'),
    );
    if (this.canWake) {
      this.connection.on('ready', () => {
        this.idRequest = this.refreshId();
      });
    }
  }

  /**
   * Ends a blocked read at once, as if it timed out, so no delivered reply is ever cut off. A
   * connection that cannot become ready has sent nothing (its commands wait in ioredis' queue).
   */
  async wake(): Promise<void> {
    if (!this.canWake) return;
    const connection = this.connection;
    // Closed half-way through its handshake, ioredis keeps a 2 s timer running: let the handshake end first.
    if (connection.status === 'connecting' || connection.status === 'connect') await handshakeEnded(connection, 1_000);
    if (connection.status !== 'ready') return;
    if (this.clientId === undefined && this.idRequest) {
      const bound = new AbortController();
      await Promise.race([this.idRequest, sleep(500, undefined, { signal: bound.signal }).catch(() => undefined)]);
      bound.abort();
    }
    if (this.clientId === undefined) return;
    // Not awaited: with Redis away it would only return when ioredis gives up.
    this.commands.client('UNBLOCK', this.clientId).catch(() => undefined);
  }

  /** Wakes it, then closes it. */
  async close(): Promise<void> {
    if (this.connection.status !== 'ready') {
      if (this.connection.status === 'connecting' || this.connection.status === 'connect')
        await handshakeEnded(this.connection, 1_000);
    }
    this.connection.disconnect();
  }

  private async refreshId(): Promise<void> {
    try {
      this.clientId = Number(await this.connection.client('ID'));
    } catch {
      this.clientId = undefined;
    }
  }
}

/** The few members of an ioredis Cluster used here (it is passed around typed as Redis). */
function asCluster(redis: Redis): {
  options: { redisOptions?: object };
  duplicate(nodes: unknown[], options: object): Redis;
} {
  return redis as unknown as {
    options: { redisOptions?: object };
    duplicate(nodes: unknown[], options: object): Redis;
  };
}

/** Resolves when `connection` is ready or closed, or after `ms`; leaves no listener or timer behind. */
function handshakeEnded(connection: Redis, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const event of ['ready', 'close', 'end']) connection.off(event, done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const event of ['ready', 'close', 'end']) connection.once(event, done);
  });
}
