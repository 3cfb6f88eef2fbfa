import type { Redis } from 'ioredis';
import type { Logger } from '../logger.ts';
import type { ProcessorSettingsInput } from '../options.ts';
import { StreamProcessor } from '../stream-processor.ts';
import type { Projection } from './define.ts';

export interface ProjectionProcessorOptions extends ProcessorSettingsInput {
  /** Its commands connection (blocking reads get connections of their own, duplicates of it). Left open by stop(). */
  readonly connection: Redis;
  readonly logger?: Logger;
}

export interface StartOptions {
  /**
   * Wait until the processor is ready (the default): groups created, its share of the partitions
   * taken, every stream prepared (group, partition count, cursors). `false` returns at once and lets the processor wait for Redis
   * as long as it takes (a service that must come up while Redis is away); `ready()` still tells.
   */
  readonly waitUntilReady?: boolean;
}

/**
 * A StreamProcessor of one projection, wired from a connection: its event store, snapshot store and
 * handlers come from the projection, its consumer group defaults to the projection's name.
 * `start()` resolves once it is ready to work.
 */
export class ProjectionProcessor extends StreamProcessor {
  readonly projection: Projection;

  constructor(projection: Projection, options: ProjectionProcessorOptions) {
    const { connection, ...settings } = options;
    super({
      ...settings,
      redis: connection,
      eventStore: projection.eventStore(connection),
      snapshots: projection.snapshots(connection),
      handlers: projection.handlers,
      group: settings.group ?? projection.name,
    });
    this.projection = projection;
  }

  /**
   * Starts the loops and resolves when the processor is ready (see StartOptions). Rejects with
   * ProcessorStartError when it cannot be: a refused login (WRONGPASS, NOAUTH) or permission
   * (NOPERM), a stream key holding another type (WRONGTYPE), another partition count stored for a
   * stream (RS_PARTITIONS_MISMATCH), or not ready within `startTimeoutMs`; it is stopped then.
   */
  override async start(options: StartOptions = {}): Promise<void> {
    await super.start();
    if (options.waitUntilReady === false) return;
    try {
      await this.ready();
    } catch (error) {
      await this.stop();
      throw error;
    }
  }
}

/**
 * Wires a processor of the projection from one Redis connection (BullMQ's `new Worker(name, fn, {
 * connection })`). Settings as StreamProcessor's (`processorSettingsSchema`), validated here; `group`
 * defaults to the projection's name.
 */
export function createProcessor(projection: Projection, options: ProjectionProcessorOptions): ProjectionProcessor {
  return new ProjectionProcessor(projection, options);
}
