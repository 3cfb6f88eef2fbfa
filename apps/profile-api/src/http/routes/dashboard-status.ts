import type { FastifyBaseLogger } from 'fastify';
import type { StreamStatus } from '@redsource/processor';

/** A running rebuild, as the page shows it: phase and entries folded of the total. */
export interface RebuildProgress {
  readonly phase: string;
  readonly done: number;
  readonly total: number;
  readonly startedAt?: number;
  readonly updatedAt?: number;
}

/** One stream's applied totals over the last minutes: `[at, applied]` pairs, oldest first. */
export interface AppliedHistory {
  readonly stream: string;
  readonly samples: readonly (readonly [number, number])[];
}

/** What `GET /dashboard/status.json` answers: the streams' status and, when known, a rebuild in progress. */
export interface DashboardStatus {
  /** Server time of the reading (ms since epoch): the page computes rates from it. */
  readonly at: number;
  readonly streams: readonly StreamStatus[];
  readonly rebuild?: RebuildProgress | undefined;
  /** The applied totals of earlier readings (with `?history=1`), so a page just opened shows the recent rate. */
  readonly history?: readonly AppliedHistory[];
}

export interface StatusCacheOptions {
  readonly status: () => Promise<readonly StreamStatus[]>;
  readonly rebuild?: (() => Promise<RebuildProgress | undefined>) | undefined;
  /** How long one reading (or one failure) answers every page: N open pages cost one Redis read per this. */
  readonly ttlMs?: number;
  /** How far back the applied history reaches, and how far apart its samples are. */
  readonly historyMs?: number;
  readonly sampleMs?: number;
  readonly now?: () => number;
}

export type StatusReading =
  | { readonly ok: true; readonly status: DashboardStatus }
  | { readonly ok: false; readonly error: unknown; readonly since: number };

/**
 * The dashboard's reads of Redis, shared by every open page: at most one status read per `ttlMs`
 * (requests in between get the same reading, a failure included), and a short history of the applied
 * totals taken from those readings.
 */
export function statusCache(options: StatusCacheOptions, log: () => FastifyBaseLogger) {
  const ttlMs = options.ttlMs ?? 1000;
  const historyMs = options.historyMs ?? 5 * 60_000;
  const sampleMs = options.sampleMs ?? 2000;
  const now = options.now ?? Date.now;
  const history = new Map<string, [number, number][]>();
  let last: { readonly at: number; readonly reading: StatusReading } | undefined;
  let inFlight: Promise<StatusReading> | undefined;
  let failingSince: number | undefined;

  function remember(status: DashboardStatus): void {
    const present = new Set<string>();
    for (const row of status.streams) {
      present.add(row.stream);
      let samples = history.get(row.stream);
      if (!samples) history.set(row.stream, (samples = []));
      const previous = samples[samples.length - 1];
      // A total that went down (a replay reset it) starts the series again.
      if (previous && row.applied < previous[1]) samples.length = 0;
      const latest = samples[samples.length - 1];
      if (!latest || status.at - latest[0] >= sampleMs) samples.push([status.at, row.applied]);
      while (samples.length > 0 && (samples[0]?.[0] ?? 0) < status.at - historyMs) samples.shift();
    }
    for (const name of [...history.keys()]) if (!present.has(name)) history.delete(name);
  }

  async function readNow(): Promise<StatusReading> {
    const { status, rebuild } = options;
    try {
      const [streams, running] = await Promise.all([status(), rebuild ? rebuild().catch(() => undefined) : undefined]);
      const reading: DashboardStatus = { at: now(), streams, rebuild: running };
      remember(reading);
      if (failingSince !== undefined)
        log().info({ failedForMs: now() - failingSince }, 'dashboard: status readable again');
      failingSince = undefined;
      return { ok: true, status: reading };
    } catch (error) {
      // Said once when it starts failing; every page keeps polling, so the rest is debug.
      // The warning carries the reason only; the error with its stack is debug.
      if (failingSince === undefined) {
        log().warn(
          { reason: error instanceof Error ? error.message : String(error) },
          'dashboard: status not readable; answering 503 (the pages keep their last figures) until it is',
        );
      }
      log().debug({ err: error }, 'dashboard: status not readable');
      failingSince ??= now();
      return { ok: false, error, since: failingSince };
    }
  }

  return {
    /** The current reading: a fresh one at most every `ttlMs`, shared by all callers. */
    async read(): Promise<StatusReading> {
      if (last && now() - last.at < ttlMs) return last.reading;
      inFlight ??= readNow().then((reading) => {
        last = { at: now(), reading };
        inFlight = undefined;
        return reading;
      });
      return inFlight;
    },
    /** The applied totals kept, per stream. */
    history(): AppliedHistory[] {
      return [...history].map(([stream, samples]) => ({
        stream,
        samples: samples.map(([at, applied]) => [at, applied] as const),
      }));
    },
  };
}
