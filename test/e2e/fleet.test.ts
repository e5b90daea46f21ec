/**
 * Issue 14: one per-client limit across a fleet, exchanged through Redis, every packet decided
 * locally. Three nodes on this machine (each a namespace with its own protected veth and its own
 * `sluice run`, own state directory), the same client address sending to each, a global limit of
 * L = 1,000 packets/s per source with a local fallback of L/3 (the fixed split), interval 100 ms.
 *
 * Through a real redis-server on a loopback port, then a 3-master Redis Cluster: three traffic
 * shapes (equal on all nodes, all on one, moving every 2 s), each of T = 10 s, must pass between
 * 0.90 L T and 1.10 L T in total, as the receivers count. The negative control is the fixed L/N
 * split without the exchange (Redis stopped): it must fail the one-node shape. Redis stopped in the
 * middle of a run: every node says so and is on its local limit; with Redis back, the global limit
 * holds again. Every redis-server is stopped by its PID, also on failure.
 */
import assert from 'node:assert/strict';
import { cpus } from 'node:os';
import { after, before, test } from 'node:test';
import { Fleet, freeRedisPorts, RedisCluster, RedisServer, shapes } from '../lib/fleet';

const N = 3;
const L = 1000;
const T = 10;
const INTERVAL = 100;
/** Offered in total: more than the limit, so that it binds in every shape. */
const OFFERED = 1800;

const fleet = new Fleet({ nodes: N, limit: L, local: Math.floor(L / N), intervalMs: INTERVAL });
let redis: RedisServer;
let cluster: RedisCluster | undefined;
const S = shapes(N, T, OFFERED);
const within = (total: number): boolean => total >= 0.9 * L * T && total <= 1.1 * L * T;
/**
 * docs/fleet.md, The bound: k L + A + N (C - 1) k W / I over k windows from a window edge, A at
 * most one ask per node (2 R I), plus what the runs' last 50 ms (into the next window) may pass.
 */
const CEILING = T * L + 2 * OFFERED * (INTERVAL / 1000) + N * (cpus().length - 1) * (T * 1000 / INTERVAL) + OFFERED * 0.05;
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

before(async () => {
  const [port] = await freeRedisPorts(1);
  redis = new RedisServer(port!);
  await redis.start();
  await fleet.setup();
  await fleet.startDaemons({ redis: `127.0.0.1:${port}`, name: 'fleettest' });
  await fleet.waitConnected(true);
});

after(async () => {
  await fleet.dispose();
  await redis?.dispose();
  await cluster?.dispose();
});

for (const shape of ['equal', 'one', 'moving'] as const) {
  test(`standalone Redis, ${shape} traffic: the fleet passes L x T within 10%`, async () => {
    const r = await fleet.run(S[shape].plan, S[shape].pps, T);
    const total = sum(r.received);
    const st2 = await Promise.all(fleet.nodes.map((n) => fleet.status(n)));
    console.log(`# standalone ${shape}: received ${JSON.stringify(r.received)} = ${total} of ${sum(r.sent)} sent; expected ${L * T}; rounds/errors ${st2.map((x) => `${String(x.fleet['rounds'])}/${String(x.fleet['errors'])} ${String(x.fleet['last_error'])}`).join(' ')}`);
    assert.ok(within(total), `${shape}: ${total} packets passed, expected ${0.9 * L * T}..${1.1 * L * T}`);
    assert.ok(total <= CEILING, `${shape}: ${total} packets passed, over the bound of docs/fleet.md (${CEILING})`);
  });
}

test('negative control: the fixed L/N split without the exchange fails the one-node shape', async () => {
  await redis.stop();
  await fleet.waitConnected(false);
  const r = await fleet.run(S.one.plan, S.one.pps, T);
  const total = sum(r.received);
  console.log(`# no exchange, one node: received ${total}; a third of L x T is ${Math.round(L * T / N)}`);
  assert.ok(!within(total), `without the exchange the one-node shape passed ${total}, within 10% of ${L * T}: the check could not tell`);
  assert.ok(total <= 1.1 * (L / N) * T, `without the exchange one node passed ${total}, more than its local limit allows`);
  await redis.start();
  await fleet.waitConnected(true);
});

test('Redis stopped mid-run: each node reports it and falls back to its local limit; back, the global limit holds again', async () => {
  // 9 s of all traffic on node 0: Redis is stopped at 3 s and started again at 6 s.
  let down: { fleet: Record<string, unknown> }[] = [];
  let metric = '';
  const wait = (at: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())));
  const r = await fleet.run([[[0, 9]], [], []], [OFFERED, 0, 0], 9, async (start) => {
    await wait(start + 3000);
    await redis.stop();
    await fleet.waitConnected(false);
    down = await Promise.all(fleet.nodes.map((n) => fleet.status(n)));
    metric = await fleet.metrics(fleet.nodes[0]!);
    await wait(start + 6000);
    await redis.start();
    await fleet.waitConnected(true);
  });
  const phase = (from: number, to: number): number => sum(r.perSecond.slice(from, to));
  const [up, out, back] = [phase(0, 3), phase(3, 6), phase(6, 9)];
  console.log(`# mid-run, one node: connected ${up}, Redis down ${out}, back ${back} (3 s each; per second ${JSON.stringify(r.perSecond)})`);
  for (const s of down) {
    assert.equal(s.fleet['connected'], false);
    assert.equal(s.fleet['fallback'], true);
  }
  assert.match(metric, /^sluice_fleet_connected 0$/m);
  for (const n of fleet.nodes) assert.ok(n.daemon!.logs.some((l) => l.event === 'fleet_disconnected'), `node ${n.index} did not log the outage`);
  assert.ok(up >= 0.9 * L * 3 && up <= 1.1 * L * 3, `before the outage: ${up} in 3 s`);
  // Down: node 0 alone on its local limit L/N (its windows are its own clock's: at most 4 of them
  // meet 3 s), plus what its grant still held when Redis stopped (at most one ask: two intervals of
  // its demand).
  assert.ok(out <= (L / N) * 4 + (2 * OFFERED * INTERVAL) / 1000, `during the outage node 0 passed ${out}`);
  assert.ok(out >= 0.9 * (L / N) * 2, `during the outage node 0 passed ${out}, less than its local limit`);
  // Back: the global limit for node 0 alone again (what the fallback passed counts in its window).
  assert.ok(back >= 0.9 * L * 3 && back <= 1.1 * L * 3, `after Redis came back: ${back} in 3 s`);
});

test('a 3-master Redis Cluster: the three shapes within 10%', async () => {
  await redis.stop();
  const ports = await freeRedisPorts(3);
  cluster = new RedisCluster(ports);
  await cluster.start();
  await fleet.startDaemons({ cluster: ports.map((p) => `127.0.0.1:${p}`), name: 'fleettest' });
  await fleet.waitConnected(true);
  const st = await fleet.status(fleet.nodes[0]!);
  assert.equal(st.fleet['mode'], 'cluster');
  for (const shape of ['equal', 'one', 'moving'] as const) {
    const r = await fleet.run(S[shape].plan, S[shape].pps, T);
    const total = sum(r.received);
    const st2 = await Promise.all(fleet.nodes.map((n) => fleet.status(n)));
    console.log(`# cluster ${shape}: received ${JSON.stringify(r.received)} = ${total} of ${sum(r.sent)} sent; expected ${L * T}; rounds/errors ${st2.map((x) => `${String(x.fleet['rounds'])}/${String(x.fleet['errors'])} ${String(x.fleet['last_error'])}`).join(' ')}`);
    assert.ok(within(total), `cluster, ${shape}: ${total} packets passed, expected ${0.9 * L * T}..${1.1 * L * T}`);
    assert.ok(total <= CEILING, `cluster, ${shape}: ${total} packets passed, over the bound of docs/fleet.md (${CEILING})`);
  }
});
