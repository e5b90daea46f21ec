/**
 * Runtime changes through the control plane: key prefixes, algorithms, rule tables swapped under
 * traffic, and invalid policies refused without touching the live one.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Reason } from '../../src/generated/types';
import { PolicyError } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const from = (src: string): Buffer => (src.includes(':') ? pkt().eth().ipv6({ src, dst: '2001:db8:ff::1' }) : pkt().eth().ipv4({ src, dst: '198.51.100.1' })).udp({ sport: 1, dport: 2 }).build();

async function passes(src: string, n: number): Promise<number> {
  let p = 0;
  for (let i = 0; i < n; i++) if ((await dp.run(from(src))) === 'pass') p++;
  return p;
}

test('key prefix lengths change at runtime: /24 and /48 share a bucket, /32 and /64 do not', async () => {
  dp.clearState();
  dp.setNow(50_000_000_000n);
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'fixed', pps: 10, key: { v4: 24, v6: 48 } }] });
  assert.equal(await passes('192.0.2.1', 10), 10);
  assert.equal(await passes('192.0.2.2', 5), 0, 'same /24: the bucket is shared');
  assert.equal(await passes('2001:db8:1:1::1', 10), 10);
  assert.equal(await passes('2001:db8:1:2::1', 5), 0, 'same /48');
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'fixed', pps: 10, key: { v4: 32, v6: 64 } }] });
  assert.equal(await passes('192.0.2.3', 10), 10, 'per /32 now');
  assert.equal(await passes('2001:db8:1:3::1', 10), 10, 'per /64 now');
});

test('a per-rule key is one bucket for every source', async () => {
  dp.clearState();
  dp.setNow(60_000_000_000n);
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'gcra', pps: 1, ppsBurst: 20, key: 'rule' }] });
  let p = 0;
  for (let i = 0; i < 40; i++) p += (await passes(`10.${i}.0.1`, 1)) + (await passes(`2001:db8:${i}::1`, 1));
  assert.equal(p, 20);
});

test('a limit change keeps state; an algorithm change starts each key afresh', async () => {
  dp.clearState();
  dp.setNow(70_000_000_000n);
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 1, ppsBurst: 5 }] });
  assert.equal(await passes('198.18.0.1', 10), 5);
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 2, ppsBurst: 6 }] });
  assert.equal(await passes('198.18.0.1', 10), 0, 'same algorithm: the empty bucket stays empty');
  dp.setNow(72_000_000_000n);
  assert.equal(await passes('198.18.0.1', 10), 0, 'the debt of the old bucket (5 s) is not forgiven: 2 s later the bucket is still in debt');
  dp.setNow(72_500_000_000n);
  assert.equal(await passes('198.18.0.1', 10), 1, 'once the debt is paid (5 s), half a second at 2/s refills one');
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'fixed', pps: 3 }] });
  assert.equal(await passes('198.18.0.1', 10), 3, 'new algorithm: the key starts afresh');
});

test('an invalid policy is refused with every problem listed, and the live one stays', async () => {
  dp.clearState();
  dp.setNow(80_000_000_000n);
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'fixed', pps: 4 }] });
  const version = dp.limiter.version();
  assert.throws(() => dp.limiter.applyPolicy({
    rules: [
      { id: 0, alg: 'fixed', pps: 0 },
      { id: 1, src: ['10.0.0.0/33'], alg: 'leaky' as never, windowMs: 0 },
    ],
  }), (e: unknown) => {
    assert.ok(e instanceof PolicyError);
    assert.equal(e.problems.length, 4, e.message);
    assert.match(e.message, /pps 0/);
    assert.match(e.message, /10\.0\.0\.0\/33/);
    assert.match(e.message, /leaky/);
    assert.match(e.message, /windowMs 0/);
    return true;
  });
  assert.equal(dp.limiter.version(), version, 'nothing was flipped');
  assert.equal(await passes('198.18.1.1', 10), 4, 'the old limit still holds');
});

test('200 policy swaps under traffic on both CPUs: no packet ever sees a table of another version', async () => {
  dp.clearState();
  dp.setNow(0n);
  const before = dp.limiter.globalCounters().reason_packets[Reason.STALE]!;
  let stop = false;
  const traffic = [0, 1].map(async (cpu) => {
    let runs = 0;
    while (!stop) { await dp.prog.runOnCpu(cpu, from(cpu ? '2001:db8:9::1' : '10.9.9.9'), { repeat: 20_000 }); runs++; }
    return runs;
  });
  for (let i = 0; i < 200; i++) {
    await new Promise((res) => setImmediate(res)); // let the traffic loops queue their next runs
    dp.limiter.applyPolicy({
      rules: [
        { id: 0, alg: i % 2 ? 'token' : 'fixed', pps: 1000 + i },
        { id: 1, src: ['10.9.0.0/16', '2001:db8:9::/48'], alg: 'gcra', pps: 50 + i },
        { id: 2, src: [`10.${i % 200}.0.0/16`], alg: 'sliding', pps: 10 },
      ],
    });
  }
  stop = true;
  const runs = await Promise.all(traffic);
  assert.ok(runs.every((r) => r > 20), `traffic ran during the swaps (${runs} runs of 20,000 per CPU)`);
  const stale = dp.limiter.globalCounters().reason_packets[Reason.STALE]! - before;
  assert.equal(stale, 0n, 'stale table entries seen');
  assert.ok(dp.limiter.counters(1).reason_packets[Reason.PASS]! > 0n, 'the CIDR rule classified traffic');
});
