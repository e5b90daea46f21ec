/**
 * Issue 14, the exchange's Redis side against a real redis-server (started on a loopback port with a
 * password, stopped by its PID): the round script never allocates past a window's limit however the
 * nodes' rounds interleave, splits what is free in proportion to the asks when they exceed it,
 * counts usage beyond an allocation (the local fallback) against the window, and takes back what a
 * node releases; and the agent authenticates with the password from the config, a wrong one being a
 * failed round that says why.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import type { FleetConfig } from '../../src/config/load';
import { FleetExchange } from '../../src/fleet/exchange';
import { ROUND_LUA, slotOf } from '../../src/fleet/script';
import { freeRedisPorts, RedisServer } from '../lib/fleet';
import { rng } from '../lib/rng';

const PASSWORD = 'fleet-test-password-1';
let server: RedisServer;
let redis: Redis;

before(async () => {
  const [port] = await freeRedisPorts(1);
  server = new RedisServer(port!, ['--requirepass', PASSWORD]);
  await server.start();
  redis = new Redis({ port: port!, host: '127.0.0.1', password: PASSWORD, lazyConnect: true });
  await redis.connect();
  redis.defineCommand('round', { lua: ROUND_LUA });
});

after(async () => {
  redis?.disconnect();
  await server?.dispose();
});

type Round = (n: number, ...a: (string | number)[]) => Promise<number[]>;
const round = (key: string, member: string, limit: number, used: number, want: number, rel = false, now = Date.now()): Promise<number[]> =>
  (redis as unknown as { round: Round }).round(1, key, member, now, 300, 5000, limit, used, want, rel ? '1' : '0');

test('interleaved rounds of three nodes never allocate past the limit, and hand out all of it', async () => {
  const rand = rng(1414);
  for (let trial = 0; trial < 20; trial++) {
    const key = `t:{k${trial}}:1`;
    const limit = 200 + Math.floor(rand() * 800);
    const used = [0, 0, 0];
    const mine = [0, 0, 0];
    for (let step = 0; step < 60; step++) {
      const i = Math.floor(rand() * 3);
      // Each node spends part of what it holds, then asks for up to two rounds of a random demand.
      used[i]! += Math.floor((mine[i]! - used[i]!) * rand());
      const [m, total] = await round(key, `n${i}`, limit, used[i]!, Math.floor(rand() * limit / 2));
      mine[i] = m!;
      assert.ok(mine[i]! >= used[i]!, 'an allocation covers what was used');
      assert.equal(total, mine.reduce((a, b) => a + b, 0), 'the total is the sum of the allocations');
      assert.ok(total! <= limit, `trial ${trial}: ${total} allocated of ${limit}`);
    }
    // Nodes that keep asking get all that is left, and not one packet more.
    let total = 0;
    for (let k = 0; k < 30 && total < limit; k++) [mine[k % 3], total] = await round(key, `n${k % 3}`, limit, used[k % 3]!, limit) as [number, number];
    assert.equal(total, limit, `trial ${trial}: ${total} of ${limit} handed out to nodes that ask for more`);
  }
});

test('asks over what is free are split in proportion; usage beyond an allocation counts; a release gives it back', async () => {
  const key = 't:{split}:1';
  const now = Date.now();
  assert.deepEqual(await round(key, 'a', 100, 0, 60, false, now), [60, 60]);
  // b asks 120 while 40 are free and a's last ask was 60: b gets 40 x 120/180, rounded up.
  assert.deepEqual(await round(key, 'b', 100, 0, 120, false, now), [27, 87]);
  // c passed 20 under its local fallback before its first round: counted, past nothing free.
  assert.deepEqual(await round(key, 'c', 100, 20, 10, false, now), [20, 107]);
  // a used 10 of its 60 and releases the rest.
  assert.deepEqual(await round(key, 'a', 100, 10, 0, true, now), [10, 57]);
  assert.ok(slotOf(key) === slotOf('{split}'), 'a key is placed by its hash tag');
});

const config = (port: number, password: string | null): FleetConfig => ({
  mode: 'standalone', nodes: [{ host: '127.0.0.1', port }], name: 'authtest', node: 'n1', intervalMs: 100, timeoutMs: 500,
  maxKeys: 16, username: null, password, tls: null,
});

test('the agent authenticates with the configured password; a wrong one fails its rounds and says why', async () => {
  const log = pino({ level: 'silent' });
  const good = new FleetExchange(config(server.port, PASSWORD), log, () => []);
  const bad = new FleetExchange(config(server.port, 'not-the-password'), log, () => []);
  try {
    await new Promise((r) => setTimeout(r, 300));
    await good.round();
    await bad.round();
    assert.equal(good.status().connected, true);
    assert.equal(bad.status().connected, false);
    assert.match(String(bad.status().last_error), /WRONGPASS|invalid username-password|NOAUTH|connection is/);
  } finally {
    await good.stop();
    await bad.stop();
  }
});
