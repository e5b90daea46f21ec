/**
 * The policy engine through BPF_PROG_TEST_RUN: each match dimension, longest-prefix precedence,
 * lists before rules, block for an exact duration, dry-run against enforce, per-rule and per-/24
 * keys, the aggregate limit under a spoofed flood, GeoIP tiers, and a thousand swaps under traffic.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Reason } from '../../src/generated/types';
import { compileGeo } from '../../src/limiter/geoip';
import type { PolicySpec, RuleSpec } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { IPPROTO, pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const DEFAULT: RuleSpec = { id: 0, alg: 'fixed', pps: 1_000_000 };
const udp = (src: string, dport = 9, dst?: string): Buffer => (src.includes(':')
  ? pkt().eth().ipv6({ src, dst: dst ?? '2001:db8:ff::1' })
  : pkt().eth().ipv4({ src, dst: dst ?? '198.51.100.1' })).udp({ sport: 1000, dport }).build();
const tcp = (src: string, flags: string, dport = 80): Buffer => pkt().eth().ipv4({ src, dst: '198.51.100.1' }).tcp({ sport: 1000, dport, flags }).build();

/** Which rule id counted the packet, and with what reason. */
async function decide(frame: Buffer, ids: number[]): Promise<{ verdict: string; rule: number | 'global'; reason: string }> {
  const before = [...ids.map((i) => dp.limiter.counters(i)), dp.limiter.globalCounters()];
  const verdict = await dp.run(frame);
  const after_ = [...ids.map((i) => dp.limiter.counters(i)), dp.limiter.globalCounters()];
  for (let s = 0; s < after_.length; s++) {
    for (let r = 0; r < Reason.MAX; r++) {
      if (after_[s]!.reason_packets[r]! > before[s]!.reason_packets[r]!) {
        return { verdict, rule: s < ids.length ? ids[s]! : 'global', reason: Object.keys(Reason).find((k) => Reason[k as keyof typeof Reason] === r)! };
      }
    }
  }
  throw new Error('no counter moved');
}

const apply = (rules: RuleSpec[], geo?: Parameters<typeof dp.limiter.applyPolicy>[1]): void => {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [DEFAULT, ...rules] } as PolicySpec, geo);
};

test('each match dimension selects its rule', async () => {
  dp.setNow(1_000_000_000n);
  apply([
    { id: 1, name: 'dst', dst: '203.0.113.0/24', alg: 'fixed', pps: 1000 },
    { id: 2, name: 'udp-53', proto: IPPROTO.UDP, dport: [53, 53], alg: 'fixed', pps: 1000 },
    { id: 3, name: 'web', proto: IPPROTO.TCP, dport: [[80, 80], [443, 443]], alg: 'fixed', pps: 1000 },
    { id: 4, name: 'syn', proto: IPPROTO.TCP, syn: true, alg: 'fixed', pps: 1000 },
    { id: 5, name: 'range', proto: IPPROTO.UDP, dport: [1000, 1999], alg: 'fixed', pps: 1000 },
    { id: 6, name: 'icmp', proto: IPPROTO.ICMP, alg: 'fixed', pps: 1000 },
  ]);
  const ids = [0, 1, 2, 3, 4, 5, 6];
  assert.equal((await decide(udp('192.0.2.1', 7, '203.0.113.9'), ids)).rule, 1, 'destination prefix');
  assert.equal((await decide(udp('192.0.2.1', 53), ids)).rule, 2, 'protocol and port');
  assert.equal((await decide(tcp('192.0.2.1', 'A', 443), ids)).rule, 3, 'second port of a list');
  assert.equal((await decide(tcp('192.0.2.1', 'A', 80), ids)).rule, 3, 'first port of a list');
  assert.equal((await decide(tcp('192.0.2.1', 'S', 22), ids)).rule, 4, 'TCP SYN');
  assert.equal((await decide(tcp('192.0.2.1', 'SA', 22), ids)).rule, 0, 'SYN+ACK is not a SYN');
  assert.equal((await decide(udp('192.0.2.1', 1500), ids)).rule, 5, 'port range');
  assert.equal((await decide(udp('192.0.2.1', 2000), ids)).rule, 0, 'outside the range');
  assert.equal((await decide(pkt().eth().ipv4({ src: '192.0.2.1', dst: '198.51.100.1' }).icmp({ type: 8 }).build(), ids)).rule, 6, 'ICMP');
});

test('longest source prefix first, for IPv4 and IPv6; then rule order', async () => {
  apply([
    { id: 1, src: ['10.0.0.0/8', '2001:db8::/32'], alg: 'fixed', pps: 1000 },
    { id: 2, src: ['10.1.0.0/16', '2001:db8:1::/48'], alg: 'fixed', pps: 1000 },
    { id: 3, src: ['10.1.2.0/24', '2001:db8:1:2::/64'], proto: IPPROTO.TCP, alg: 'fixed', pps: 1000 },
    { id: 4, proto: IPPROTO.UDP, alg: 'fixed', pps: 1000 },
  ]);
  const ids = [0, 1, 2, 3, 4];
  assert.equal((await decide(udp('10.9.9.9'), ids)).rule, 1);
  assert.equal((await decide(udp('10.1.9.9'), ids)).rule, 2);
  assert.equal((await decide(udp('10.1.2.3'), ids)).rule, 2, 'the /24 rule needs TCP: the /16 decides');
  assert.equal((await decide(tcp('10.1.2.3', 'A'), ids)).rule, 3);
  assert.equal((await decide(udp('192.0.2.1'), ids)).rule, 4, 'no prefix: the source-less rule');
  assert.equal((await decide(udp('2001:db8:9::1'), ids)).rule, 1);
  assert.equal((await decide(udp('2001:db8:1:9::1'), ids)).rule, 2);
  assert.equal((await decide(pkt().eth().ipv6({ src: '2001:db8:1:2::5', dst: '2001:db8:ff::1' }).tcp({ sport: 1, dport: 2, flags: 'A' }).build(), ids)).rule, 3);
});

test('allow and deny lists decide before every rule; management before both', async () => {
  apply([{ id: 1, src: ['10.0.0.0/8'], alg: 'fixed', pps: 1 }]);
  dp.limiter.applyLists({ mgmt: ['10.0.0.1/32'], deny: ['10.0.0.0/24'], allow: ['10.0.1.0/24'] });
  try {
    const ids = [0, 1];
    assert.deepEqual(await decide(udp('10.0.0.1'), ids), { verdict: 'pass', rule: 'global', reason: 'MGMT' });
    assert.deepEqual(await decide(udp('10.0.0.2'), ids), { verdict: 'drop', rule: 'global', reason: 'DENYLIST' });
    for (let i = 0; i < 5; i++) assert.deepEqual(await decide(udp('10.0.1.2'), ids), { verdict: 'pass', rule: 'global', reason: 'ALLOWLIST' });
    assert.equal((await decide(udp('10.0.2.2'), ids)).rule, 1);
  } finally {
    dp.limiter.applyLists({ mgmt: [], deny: [], allow: [] });
  }
});

test('block: over the limit, the key is dropped for exactly block_ms, without charge', async () => {
  apply([{ id: 1, src: ['10.5.0.0/16'], alg: 'token', pps: 1, ppsBurst: 2, action: 'block', blockMs: 30_000 }]);
  const t0 = 100_000_000_000n;
  const at = async (ms: number): Promise<{ verdict: string; reason: string }> => {
    dp.setNow(t0 + BigInt(ms) * 1_000_000n);
    const r = await decide(udp('10.5.0.1'), [0, 1]);
    return { verdict: r.verdict, reason: r.reason };
  };
  assert.deepEqual(await at(0), { verdict: 'pass', reason: 'PASS' });
  assert.deepEqual(await at(0), { verdict: 'pass', reason: 'PASS' });
  assert.deepEqual(await at(0), { verdict: 'drop', reason: 'LIMIT' }, 'over: blocked from now');
  assert.deepEqual(await at(1), { verdict: 'drop', reason: 'BLOCKED' });
  assert.deepEqual(await at(29_999), { verdict: 'drop', reason: 'BLOCKED' }, 'still blocked 1 ms before the end');
  assert.deepEqual(await at(30_000), { verdict: 'pass', reason: 'PASS' }, 'free at exactly 30 s (the bucket refilled meanwhile)');
});

test('dry-run passes everything and counts exactly the would-drops of enforce mode', async () => {
  const trace: [string, number][] = [];
  for (let i = 0; i < 3000; i++) trace.push([`10.6.0.${i % 7}`, i * 300_000]); // every 0.3 ms: 7 sources, ~476 packets/s each
  const run = async (action: 'drop' | 'dry-run'): Promise<{ drops: number; passes: number; would: number }> => {
    apply([{ id: 1, src: ['10.6.0.0/24'], alg: 'sliding', pps: 100, action }]);
    const c0 = dp.limiter.counters(1); // rule ids keep their counters across policies
    let passes = 0;
    for (const [src, t] of trace) {
      dp.setNow(200_000_000_000n + BigInt(t));
      if ((await dp.run(udp(src))) === 'pass') passes++;
    }
    const c = dp.limiter.counters(1);
    return {
      drops: Number(c.reason_packets[Reason.LIMIT]! - c0.reason_packets[Reason.LIMIT]!),
      passes,
      would: Number(c.reason_packets[Reason.DRYRUN]! - c0.reason_packets[Reason.DRYRUN]!),
    };
  };
  const enforce = await run('drop');
  const dry = await run('dry-run');
  assert.ok(enforce.drops > 1000, `enforce dropped ${enforce.drops}`);
  assert.equal(dry.passes, trace.length, 'dry-run passes every packet');
  assert.equal(dry.would, enforce.drops, 'would-drops equal enforce drops');
});

test('a per-rule key is one bucket for all sources; a /24 key groups a subnet', async () => {
  dp.setNow(300_000_000_000n);
  apply([
    { id: 1, proto: IPPROTO.UDP, dport: [53, 53], alg: 'gcra', pps: 1, ppsBurst: 100, key: 'rule' },
    { id: 2, src: ['10.7.0.0/16'], alg: 'fixed', pps: 10, key: { v4: 24, v6: 48 } },
  ]);
  let dns = 0;
  for (let i = 0; i < 300; i++) if ((await dp.run(udp(`10.${8 + (i % 50)}.${i % 256}.1`, 53))) === 'pass') dns++;
  assert.equal(dns, 100, 'one bucket for all of UDP/53');
  let a = 0;
  for (let i = 0; i < 30; i++) if ((await dp.run(udp(`10.7.1.${i}`))) === 'pass') a++;
  assert.equal(a, 10, 'the /24 shares one window of 10');
  assert.equal(await dp.run(udp('10.7.2.1')), 'pass', 'another /24 has its own');
});

test('a spoofed flood of new sources is held to the rule\'s aggregate limit', async () => {
  dp.setNow(400_000_000_000n);
  apply([{ id: 1, proto: IPPROTO.UDP, alg: 'token', pps: 100, aggregate: { pps: 5000, burst: 2000 } }]);
  dp.setSalt(true); // a new source on every run
  try {
    const before = dp.limiter.counters(1);
    await dp.prog.run(udp('10.9.0.1'), { repeat: 50_000 });
    const c = dp.limiter.counters(1);
    const passed = Number(c.reason_packets[Reason.PASS]! - before.reason_packets[Reason.PASS]!);
    const agg = Number(c.reason_packets[Reason.AGGREGATE]! - before.reason_packets[Reason.AGGREGATE]!);
    // Frozen clock: each CPU's share of the burst (2000 / CPUs), no refill. One CPU ran them all.
    assert.ok(passed <= 2000 && passed >= 2000 / 2 - 1, `passed ${passed} new sources of 50,000 (aggregate burst 2000)`);
    assert.equal(passed + agg, 50_000);
  } finally {
    dp.setSalt(false);
  }
});

test('GeoIP: a source is matched by its country\'s tier, others by the default tier', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-geo-'));
  try {
    const csv = join(dir, 'geo.csv');
    writeFileSync(csv, '# test data\n10.20.0.0,10.20.255.255,DE\n10.21.0.0,10.21.0.255,XX\n2001:db8:20::,2001:db8:20:ffff:ffff:ffff:ffff:ffff,DE\n');
    const geo = compileGeo({ tiers: { domestic: ['DE'], suspicious: ['XX'] }, defaultTier: 'foreign', csv });
    assert.equal(geo.entries.length, 3);
    const t = (name: string): number => geo.tierIds.get(name)!;
    apply([
      { id: 1, tier: t('domestic'), alg: 'fixed', pps: 1000 },
      { id: 2, tier: t('suspicious'), alg: 'fixed', pps: 1 },
      { id: 3, tier: t('foreign'), proto: IPPROTO.UDP, dport: [[80, 80], [443, 443]], alg: 'fixed', pps: 1000 },
    ], { entries: geo.entries, hash: geo.hash });
    const ids = [0, 1, 2, 3];
    assert.equal((await decide(udp('10.20.1.1'), ids)).rule, 1);
    assert.equal((await decide(udp('2001:db8:20:1::1'), ids)).rule, 1);
    assert.equal((await decide(udp('10.21.0.5'), ids)).rule, 2);
    assert.equal((await decide(udp('192.0.2.1', 443), ids)).rule, 3, 'foreign (the default tier) and port 443');
    assert.equal((await decide(udp('192.0.2.1', 22), ids)).rule, 0, 'foreign, another port: the default rule');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('1,000 policy swaps under traffic on both CPUs: no table entry of another version is ever seen', async () => {
  dp.clearState();
  dp.setNow(0n);
  const stale = (): bigint => dp.limiter.globalCounters().reason_packets[Reason.STALE]!;
  const before = stale();
  let stop = false;
  const frames = [udp('10.30.1.1', 53), udp('2001:db8:30::1', 443)];
  const traffic = [0, 1].map(async (cpu) => {
    let runs = 0;
    while (!stop) { await dp.prog.runOnCpu(cpu, frames[cpu]!, { repeat: 5_000 }); runs++; }
    return runs;
  });
  const t0 = Date.now();
  for (let i = 0; i < 1000; i++) {
    await new Promise((r) => setImmediate(r));
    dp.limiter.applyPolicy({
      rules: [
        { id: 0, alg: i % 2 ? 'token' : 'fixed', pps: 1000 + i },
        { id: 1, src: ['10.30.0.0/16', '2001:db8:30::/48'], proto: IPPROTO.UDP, dport: [[53, 53], [443, 443]], alg: 'gcra', pps: 50 + i },
        { id: 2, src: [`10.${30 + (i % 3)}.${i % 250}.0/24`], alg: 'sliding', pps: 10 },
      ],
    });
  }
  const seconds = (Date.now() - t0) / 1000;
  stop = true;
  const runs = await Promise.all(traffic);
  assert.ok(runs.every((r) => r > 50), `traffic ran throughout (${runs} runs of 5,000 per CPU)`);
  assert.equal(stale() - before, 0n, 'stale entries seen');
  console.log(`1,000 swaps in ${seconds.toFixed(1)} s under ${runs.reduce((a, b) => a + b) * 5000} packets`);
});
