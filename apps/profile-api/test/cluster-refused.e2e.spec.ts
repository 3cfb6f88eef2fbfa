import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliChildren, isolatedServiceEnv, runCli } from '../../../test/support/cli.ts';
import { freePort, pings } from '../../../test/support/net.ts';

/**
 * Until redsource runs on Redis Cluster, a cluster node in REDIS_URL is refused at start in one line
 * (RS_CLUSTER_UNSUPPORTED), instead of a processor retrying MOVED replies forever.
 */
describe('REDIS_URL naming a Redis Cluster node', () => {
  const children = cliChildren();
  let node: ChildProcess;
  let dir: string;
  let url: string;

  beforeAll(async () => {
    const port = await freePort();
    dir = mkdtempSync(join(tmpdir(), 'redsource-cluster-node-'));
    node = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    for (let i = 0; i < 200 && !(await pings(port)); i++) await sleep(25);
    url = `redis://127.0.0.1:${port}`;
  });
  afterAll(() => {
    node.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  for (const command of [['status'], ['serve']]) {
    it(`\`${command.join(' ')}\` exits 1 with one line saying clusters are not supported yet`, async () => {
      const run = runCli(command, { ...isolatedServiceEnv(url), PORT: String(await freePort()), HOST: '127.0.0.1' });
      children.push(run);
      const code = await Promise.race([run.exited, sleep(15_000).then(() => 'timeout' as const)]);
      expect(code, run.output()).toBe(1);
      const failure = run.output().split('\n').filter((l) => l.startsWith('redsource:'));
      expect(failure, run.output()).toEqual([expect.stringMatching(/^redsource: RS_CLUSTER_UNSUPPORTED: Redis at 127\.0\.0\.1:\d+ is a Redis Cluster node/)]);
      expect(run.output()).not.toMatch(/MOVED|CLUSTERDOWN|at .*\.ts:\d+/);
    });
  }
});
