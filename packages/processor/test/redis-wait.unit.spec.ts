import { describe, expect, it } from 'vitest';
import { RedisWaits, untilRedisAccepts } from '../src/redis-wait.ts';

const OOM = new Error("OOM command not allowed when used memory > 'maxmemory'.");
const NOSCRIPT = new Error('NOSCRIPT No matching script. Please use EVAL.');
const READONLY = new Error("READONLY You can't write against a read only replica.");

describe('RedisWaits: why a processor waits on Redis', () => {
  it('keeps the refusal under way as the reason when a script then comes back NOSCRIPT (Redis cannot load it meanwhile)', () => {
    const waits = new RedisWaits();
    expect(waits.note('s', OOM)).toBe('new');
    expect(waits.note('s', NOSCRIPT)).toBe('same');
    expect(waits.get('s')?.kind).toBe('OOM');
    expect(waits.oldest()?.reason).toMatch(/^OOM: /);
  });

  it('says NOSCRIPT when nothing else is refused (the script cache was flushed)', () => {
    const waits = new RedisWaits();
    expect(waits.note('s', NOSCRIPT)).toBe('new');
    expect(waits.get('s')?.kind).toBe('NOSCRIPT');
  });

  it('follows another refusal, keeping when the wait began', () => {
    const waits = new RedisWaits();
    waits.note('s', OOM);
    const since = waits.get('s')?.since;
    expect(waits.note('s', READONLY)).toBe('new');
    expect(waits.get('s')).toMatchObject({ kind: 'READONLY', since });
    waits.clear('s');
    expect(waits.oldest()).toBeUndefined();
  });

  it('records nothing for an error that is not Redis refusing', () => {
    expect(
      new RedisWaits().note('s', new Error('WRONGTYPE Operation against a key holding the wrong kind of value')),
    ).toBeUndefined();
  });

  it('untilRedisAccepts: a wait ends when Redis answers with another error, not only when it accepts (a partition lost meanwhile is never applied again)', async () => {
    const waits = new RedisWaits();
    const replies = [
      OOM,
      OOM,
      new Error('RS_PARTITION_LOST a later holder (fencing token 9) has claimed the partition'),
    ];
    const seen: string[] = [];
    const run = untilRedisAccepts(() => Promise.reject(replies.shift() as Error), {
      waits,
      source: 's',
      onWait: (wait) => void seen.push(wait.kind),
    });
    await expect(run).rejects.toThrow(/RS_PARTITION_LOST/);
    expect(seen).toEqual(['OOM', 'OOM']);
    expect(waits.get('s')).toBeUndefined();
    expect(waits.oldest()).toBeUndefined();
  });
});
