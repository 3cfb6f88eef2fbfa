import { describe, expect, it } from 'vitest';
import { AppendRejectedError } from '../src/errors.ts';

/** As ioredis hands Redis's error replies over: the reply text as the message, with its own final period. */
const reply = (text: string) => Object.assign(new Error(text), { name: 'ReplyError' });

describe('AppendRejectedError says what kind of refusal it is and what to check', () => {
  it('a refused login names the login, not a wrong key type', () => {
    const { message } = new AppendRejectedError(
      'user_updates',
      reply('WRONGPASS invalid username-password pair or user is disabled.'),
    );
    expect(message).toContain('refused the login');
    expect(message).toContain('REDIS_URL');
    expect(message).toContain('ACL SETUSER');
    expect(message).not.toMatch(/wrong key type|WRONGTYPE/i);
    expect(message).not.toContain('..');
  });

  it('a missing permission and an out-of-memory Redis each say theirs', () => {
    const noperm = new AppendRejectedError(
      'user_updates',
      reply("NOPERM this user has no permissions to run the 'evalsha' command"),
    ).message;
    expect(noperm).toContain('lacks a permission');
    expect(noperm).toContain('XADD');
    expect(noperm).not.toMatch(/WRONGTYPE/);
    const oom = new AppendRejectedError(
      'user_updates',
      reply("OOM command not allowed when used memory > 'maxmemory'."),
    ).message;
    expect(oom).toContain('out of memory');
    expect(oom).toContain('maxmemory');
    expect(oom).toContain('same event ids');
    for (const message of [noperm, oom]) expect(message).not.toContain('..');
  });

  it('a wrong key type still says it fails again until the key is fixed', () => {
    const { message } = new AppendRejectedError(
      'user_updates',
      reply('WRONGTYPE Operation against a key holding the wrong kind of value'),
    );
    expect(message).toContain('WRONGTYPE');
    expect(message).toContain('fails again on retry until the key is fixed');
    expect(message).not.toContain('..');
  });

  it('another refusal does not blame the key type', () => {
    const { message } = new AppendRejectedError(
      'user_updates',
      reply('ERR The stream has exhausted the last possible ID, unable to add more items'),
    );
    expect(message).toContain('exhausted the last possible ID');
    expect(message).toContain('fails again on retry until what the message names is fixed.');
    expect(message).not.toContain('WRONGTYPE');
  });
});
