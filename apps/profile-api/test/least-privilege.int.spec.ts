import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { cliChildren, ROOT, runCli } from '../../../test/support/cli.ts';
import { eventually, freePort } from '../../../test/support/redis.ts';
import { startSecureRedis, type SecureRedis } from './secure-redis.ts';

/**
 * The README's `ACL SETUSER` lines, applied as written: each role runs with exactly the documented
 * rules, on the default key names (this file's own redis-server), and any NOPERM fails the test.
 */
function documentedRules(): Map<string, string[]> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const security = readme.slice(readme.indexOf('## Security'));
  const rules = new Map<string, string[]>();
  // Words as redis-cli splits them: a quoted selector, "(~key +command ...)", is one argument.
  const words = (line: string) =>
    [...line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((m) => (m[1] ?? m[2] ?? m[3]) as string);
  for (const match of security.matchAll(/^ACL SETUSER (redsource-[a-z]+) (.+)$/gm))
    rules.set(match[1] as string, words((match[2] as string).trim()));
  return rules;
}

const password = (user: string) => `${user}-Pa55`;
const ROLES = ['redsource-api', 'redsource-processor', 'redsource-replay', 'redsource-operator', 'redsource-redrive'];

describe('least privilege: every role with only the rules the README documents', () => {
  let server: SecureRedis;
  let admin: Redis;
  const children = cliChildren();
  const url = (user: string) => `redis://${user}:${encodeURIComponent(password(user))}@127.0.0.1:${server.port}`;
  const env = (user: string, extra: Record<string, string> = {}) => ({
    REDIS_URL: url(user),
    REDSOURCE_BLOCK_MS: '100',
    REDSOURCE_HEARTBEAT_MS: '200',
    ...extra,
  });
  const cli = async (user: string, args: string[]) => {
    const run = runCli(args, env(user));
    children.push(run);
    const code = await Promise.race([run.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000))]);
    return { code, output: run.output() };
  };

  /** What Redis refused, one line per ACL LOG entry: its user, reason, command and key. */
  const denials = async () => {
    const log = (await admin.call('ACL', 'LOG')) as unknown[][];
    return log
      .map((entry) => {
        const fields = new Map<string, unknown>();
        for (let i = 0; i + 1 < entry.length; i += 2) fields.set(String(entry[i]), entry[i + 1]);
        return `${String(fields.get('username'))} ${String(fields.get('reason'))} ${String(fields.get('context'))} ${String(fields.get('object'))}`;
      })
      .join('\n');
  };

  beforeAll(async () => {
    server = await startSecureRedis({ user: 'admin', password: 'admin-Pa55' });
    admin = new Redis(server.url);
    const rules = documentedRules();
    expect([...rules.keys()]).toEqual(ROLES);
    for (const [user, words] of rules) {
      expect(words, user).toContain('>PASSWORD');
      await admin.call('ACL', 'SETUSER', user, ...words.map((w) => (w === '>PASSWORD' ? `>${password(user)}` : w)));
    }
    await admin.call('ACL', 'LOG', 'RESET');
  });
  afterAll(async () => {
    admin.disconnect();
    await server.stop();
  });

  it('the API user is read-only', async () => {
    for (const command of [
      ['SET', 'user_snapshot_1', 'x'],
      ['HSET', 'redsource:{user_updates}:applied:profiles', 'a', '1'],
      ['XADD', 'user_updates', '*', 'a', 'b'],
      ['DEL', 'user_snapshot_1'],
      ['EVAL', 'return 1', '0'],
      ['KEYS', '*'],
      ['FLUSHALL'],
    ]) {
      await expect(admin.call('ACL', 'DRYRUN', 'redsource-api', ...command), command.join(' ')).resolves.not.toBe('OK');
    }
    expect(await admin.call('ACL', 'DRYRUN', 'redsource-api', 'HGETALL', 'user_snapshot_1')).toBe('OK');
    for (const user of ROLES) {
      for (const command of [
        ['FLUSHALL'],
        ['KEYS', '*'],
        ['CONFIG', 'GET', '*'],
        ['ACL', 'LIST'],
        ['GET', 'other:key'],
      ]) {
        await expect(admin.call('ACL', 'DRYRUN', user, ...command), `${user}: ${command.join(' ')}`).resolves.not.toBe(
          'OK',
        );
      }
    }
  });

  /** ACL DRYRUN's answer: 'OK' when the user may run the command, else the reason. */
  const dryrun = async (user: string, command: string[]) => String(await admin.call('ACL', 'DRYRUN', user, ...command));
  const refused = async (user: string, commands: string[][]) => {
    for (const command of commands)
      expect(await dryrun(user, command), `${user} may ${command.join(' ')}`).not.toBe('OK');
  };
  const allowed = async (user: string, commands: string[][]) => {
    for (const command of commands) expect(await dryrun(user, command), `${user}: ${command.join(' ')}`).toBe('OK');
  };
  const STREAMS = ['user_updates', 'user_activity', 'user_friends'];
  /** What nobody but an appender (and `redsource-redrive`, for its XADD) may do to an event stream. */
  const streamWrites = (s: string) => [
    ['XADD', s, '*', 'user_id', '1', 'command', 'forged'],
    ['XDEL', s, '1-0'],
    ['DEL', s],
    ['UNLINK', s],
    ['RENAME', s, 'redsource:x'],
    ['XTRIM', s, 'MAXLEN', '0'],
    ['XSETID', s, '9-9'],
    ['XGROUP', 'DESTROY', s, 'profiles'],
    ['SET', s, 'x'],
    ['EXPIRE', s, '1'],
  ];
  const forgeScript = (s: string) => [
    'EVAL',
    "return redis.call('XADD', KEYS[1], '*', 'user_id', '1', 'command', 'forged')",
    '1',
    s,
  ];

  it('no role but redrive may append to, and none may delete, trim or rewrite, an event stream', async () => {
    for (const s of STREAMS) {
      await refused('redsource-api', streamWrites(s));
      await refused('redsource-processor', streamWrites(s));
      await refused('redsource-replay', streamWrites(s));
      await refused('redsource-operator', streamWrites(s));
      await refused('redsource-redrive', streamWrites(s).slice(1));
      await allowed('redsource-redrive', [['XADD', s, '*', 'a', 'b']]);
      // Each role keeps what its job needs on the stream.
      await allowed('redsource-processor', [
        ['XREAD', 'STREAMS', s, '0'],
        ['XRANGE', s, '-', '+'],
        ['XGROUP', 'CREATE', s, 'profiles', '0'],
        ['XINFO', 'GROUPS', s],
        ['XPENDING', s, 'profiles'],
        ['XACK', s, 'profiles', '1-0'],
      ]);
      // Nothing reads the group any more (each processor reads the stream): it neither takes nor moves entries of it.
      await refused('redsource-processor', [
        ['XREADGROUP', 'GROUP', 'profiles', 'c', 'STREAMS', s, '>'],
        ['XGROUP', 'SETID', s, 'profiles', '0'],
      ]);
      // Dead letters are the processor's own stream: it appends to them.
      await allowed('redsource-processor', [['XADD', `redsource:{${s}}:dead`, '*', 'a', 'b']]);
      await allowed('redsource-replay', [
        ['XRANGE', s, '-', '+'],
        ['XLEN', s],
      ]);
    }
    // Dead letters: the operator deletes them, nothing else; nobody else deletes them.
    await allowed('redsource-operator', [
      ['XDEL', 'redsource:{user_updates}:dead', '1-0'],
      ['XRANGE', 'redsource:{user_updates}:dead', '-', '+'],
    ]);
    await refused('redsource-operator', [
      ['XADD', 'redsource:{user_updates}:dead', '*', 'a', 'b'],
      ['DEL', 'redsource:{user_updates}:dead'],
      ['XDEL', 'redsource:{user_updates}:applied:profiles', '1-0'],
      ['SET', 'redsource:{user_updates}:applied:profiles', '9-9'],
      ['HSET', 'user_snapshot_1', 'a', '1'],
      ['EVAL', 'return 1', '0'],
    ]);
    await refused('redsource-api', [['XDEL', 'redsource:{user_updates}:dead', '1-0']]);
    // Replay deletes and renames snapshots and its own keys, not streams.
    await allowed('redsource-replay', [
      ['DEL', 'user_snapshot_1'],
      ['RENAME', 'redsource:shadow:x', 'user_snapshot_1'],
      ['UNLINK', 'redsource:rebuild-state:p:x'],
    ]);
    await refused('redsource-replay', [['RENAME', 'user_snapshot_1', 'user_updates']]);
  });

  it('a script cannot do what its caller may not: Redis checks each redis.call again', async () => {
    await admin.xadd('user_activity', '*', 'user_id', '1', 'command', 'like', 'page', 'P');
    const before = await admin.xlen('user_activity');
    for (const user of ['redsource-processor', 'redsource-replay']) {
      const redis = new Redis(url(user));
      try {
        await expect(
          redis.call('XADD', 'user_activity', '*', 'user_id', '1', 'command', 'forged'),
          user,
        ).rejects.toThrow(/NOPERM/);
        await expect(redis.call('DEL', 'user_activity'), user).rejects.toThrow(/NOPERM/);
        await expect(redis.call('XDEL', 'user_activity', '0-1'), user).rejects.toThrow(/NOPERM/);
        await expect(redis.call(...(forgeScript('user_activity') as [string, ...string[]])), user).rejects.toThrow(
          /NOPERM|can't (run|access)/,
        );
        await expect(
          redis.call('EVAL', "return redis.call('DEL', KEYS[1])", '1', 'user_activity'),
          user,
        ).rejects.toThrow(/NOPERM|can't (run|access)/);
      } finally {
        redis.disconnect();
      }
    }
    const operator = new Redis(url('redsource-operator'));
    try {
      const [last] = (await admin.xrevrange('user_activity', '+', '-', 'COUNT', 1))[0] ?? [];
      await expect(operator.call('XDEL', 'user_activity', String(last)), 'operator XDEL').rejects.toThrow(/NOPERM/);
      await expect(
        operator.call('XADD', 'user_activity', '*', 'user_id', '1', 'command', 'forged'),
        'operator XADD',
      ).rejects.toThrow(/NOPERM/);
      await expect(
        operator.call(...(forgeScript('user_activity') as [string, ...string[]])),
        'operator EVAL',
      ).rejects.toThrow(/NOPERM/);
    } finally {
      operator.disconnect();
    }
    expect(await admin.xlen('user_activity')).toBe(before);
    await admin.call('ACL', 'LOG', 'RESET');
  });

  it('/readyz of a service whose ACL user is disabled says why, never the password', async () => {
    const rules = documentedRules().get('redsource-api') ?? [];
    await admin.call(
      'ACL',
      'SETUSER',
      'redsource-off',
      ...rules.map((w) => (w === '>PASSWORD' ? `>${password('redsource-off')}` : w)),
      'off',
    );
    const port = await freePort();
    const api = runCli(['api'], env('redsource-off', { PORT: String(port) }));
    children.push(api);
    const body = await eventually(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
        return res?.status === 503 ? ((await res.json()) as Record<string, unknown>) : undefined;
      },
      20_000,
      100,
    );
    expect(body, api.output()).toMatchObject({
      redis: 'down',
      reason: expect.stringMatching(/^WRONGPASS: .*refused the login for user redsource-off/),
    });
    expect(JSON.stringify(body)).not.toContain(password('redsource-off'));
    await admin.call('ACL', 'DELUSER', 'redsource-off');
    await admin.call('ACL', 'LOG', 'RESET');
  });

  it('the API, a processor (serve), replay, status and dlq do their work, and Redis denies nothing', async () => {
    await admin.xadd('user_updates', '*', 'user_id', '1', 'command', 'register', 'name', 'Duffy', 'surname', 'Duck');
    await admin.xadd('user_activity', '*', 'user_id', '1', 'command', 'like', 'page', 'P');
    await admin.xadd('user_friends', '*', 'user_id', '1', 'command', 'add', 'friend_id', '2');
    await admin.xadd('user_updates', '*', 'user_id', '9', 'command', 'bogus');

    const [servePort, apiPort] = [await freePort(), await freePort()];
    const serve = runCli(['serve'], env('redsource-processor', { PORT: String(servePort) }));
    const api = runCli(['api'], env('redsource-api', { PORT: String(apiPort) }));
    children.push(serve, api);
    const logs = () => `--- serve\n${serve.output()}\n--- api\n${api.output()}`;

    for (const port of [apiPort, servePort]) {
      const base = `http://127.0.0.1:${port}`;
      const profile = await eventually(
        async () => {
          const res = await fetch(`${base}/users/1/profile`).catch(() => undefined);
          const body = res?.status === 200 ? ((await res.json()) as Record<string, unknown>) : undefined;
          // The three streams are applied in parallel: wait for the last of them.
          return (body?.['friends'] as unknown[] | undefined)?.length &&
            (body?.['likedPages'] as unknown[] | undefined)?.length
            ? body
            : undefined;
        },
        20_000,
        100,
      );
      expect(profile, logs()).toMatchObject({
        id: '1',
        name: 'Duffy',
        friends: expect.arrayContaining(['2']),
        likedPages: ['P'],
      });
      const last = String(
        await admin.xadd('user_friends', '*', 'user_id', '1', 'command', 'add', 'friend_id', `p${port}`),
      );
      const after = await fetch(`${base}/users/1/profile?after=user_friends:${last}&wait=5000`);
      expect(after.status, logs()).toBe(200);
      expect((await after.json()) as Record<string, unknown>).toMatchObject({
        friends: expect.arrayContaining([`p${port}`]),
      });
      expect((await fetch(`${base}/readyz`)).status, logs()).toBe(200);
      expect((await fetch(`${base}/dashboard/status.json`)).status, logs()).toBe(200);
      expect(await (await fetch(`${base}/metrics`)).text()).toContain('redsource_status_up 1');
    }

    // Operator: status and the dead letter's whole life.
    const dead = await eventually(
      async () => {
        const list = await cli('redsource-operator', ['dlq', 'list', 'user_updates', '--json']);
        const start = list.output.indexOf('[');
        const entries =
          list.code === 0 && start !== -1 ? (JSON.parse(list.output.slice(start)) as { id: string }[]) : [];
        return entries[0]?.id;
      },
      15_000,
      200,
    );
    expect(dead, logs()).toBeDefined();
    for (const args of [
      ['status'],
      ['status', '--json'],
      ['dlq', 'list'],
      ['dlq', 'show', 'user_updates', String(dead)],
    ]) {
      const run = await cli('redsource-operator', args);
      expect(run.code, `${args.join(' ')}\n${run.output}\n${await denials()}`).toBe(0);
    }
    const retry = await cli('redsource-redrive', ['dlq', 'retry', 'user_updates', String(dead)]);
    expect(retry.code, `${retry.output}\n${await denials()}`).toBe(0);
    const again = await eventually(
      async () => Number(await admin.xlen('redsource:{user_updates}:dead')) > 0 || undefined,
      15_000,
      100,
    );
    expect(again, logs()).toBe(true);
    const drop = await cli('redsource-operator', ['dlq', 'drop', 'user_updates', '--all']);
    expect(drop.code, `${drop.output}\n${await denials()}`).toBe(0);
    expect(await admin.xlen('redsource:{user_updates}:dead')).toBe(0);

    // A rebuild while the processor and the API run.
    const replay = await cli('redsource-replay', ['replay']);
    expect(replay.code, `${replay.output}\n${await denials()}`).toBe(0);
    const replayUsers = await cli('redsource-replay', ['replay', '--users', '1']);
    expect(replayUsers.code, `${replayUsers.output}\n${await denials()}`).toBe(0);
    const rebuilt = await fetch(`http://127.0.0.1:${apiPort}/users/1/profile`);
    expect(rebuilt.status).toBe(200);

    serve.child.kill('SIGTERM');
    api.child.kill('SIGTERM');
    expect(await serve.exited, logs()).toBe(0);
    expect(await api.exited, logs()).toBe(0);

    expect(await denials(), logs()).toBe('');
    expect(logs()).not.toMatch(/NOPERM/);
  }, 60_000);
});
