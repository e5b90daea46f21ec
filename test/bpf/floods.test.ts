/**
 * Limits a flood cannot walk around: dry-run never drops (whatever would have dropped), keys past
 * a CPU's rate of new states get one key's limit between them (not the aggregate), and a blocked
 * or over-limit key that a flood of new keys evicts from the LRU comes back as it left.
 * Test build, frozen clock, every run on CPU 0 (the new-state cap and the budgets are per CPU).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Bounds, decodePenalty, encodeKey6, encodePenalty, Reason, Verdict, type Counters } from '../../src/generated/types';
import { sweepPenalties } from '../../src/limiter/limiter';
import { decodeKeyState, encodeStateKey } from '../../src/limiter/state';
import type { RuleSpec } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath, XDP_PASS } from '../lib/datapath';
import { pkt } from '../lib/packet';

let dp: TestDatapath;
/** A small state map, so that a flood of new keys evicts a key within a few thousand packets. */
const STATE_MAX = 4096;
before(async () => { dp = await TestDatapath.load({ maxEntries: STATE_MAX }); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const T0 = 7_000_000_000n;
const udp = (src: string): Buffer => pkt().eth().ipv4({ src, dst: '198.51.100.1' }).udp({ sport: 1000, dport: 9 }).build();

function setup(rules: RuleSpec[], newPerSec = 0): void {
  dp.setSalt(false);
  dp.setCasFail(false);
  dp.setNow(T0);
  dp.clearState();
  dp.limiter.applyPolicy({ rules });
  dp.limiter.setConfig({ new_states_per_sec: newPerSec });
}

type Delta = Record<'passed' | 'dropped' | 'pass' | 'dryrun' | 'untracked' | 'untrackedOver' | 'aggregate' | 'contended' | 'newStates', number>;
function delta(a: Counters, b: Counters): Delta {
  const r = (x: number): number => Number(b.reason_packets[x]! - a.reason_packets[x]!);
  return {
    passed: Number(b.packets[Verdict.PASS]! - a.packets[Verdict.PASS]!),
    dropped: Number(b.packets[Verdict.DROP]! - a.packets[Verdict.DROP]!),
    pass: r(Reason.PASS),
    dryrun: r(Reason.DRYRUN),
    untracked: r(Reason.UNTRACKED),
    untrackedOver: r(Reason.UNTRACKED_OVER),
    aggregate: r(Reason.AGGREGATE),
    contended: r(Reason.CONTENDED),
    newStates: Number(b.new_states - a.new_states),
  };
}

/** `n` packets of rule `id`, each from a new source (salted keys), on CPU 0. */
async function flood(id: number, n: number, src = '10.77.0.1'): Promise<Delta> {
  const c0 = dp.limiter.counters(id);
  dp.setSalt(true);
  try {
    await dp.prog.runOnCpu(0, udp(src), { repeat: n });
  } finally {
    dp.setSalt(false);
  }
  return delta(c0, dp.limiter.counters(id));
}

const verdict = async (src: string): Promise<'pass' | 'drop'> => ((await dp.prog.runOnCpu(0, udp(src))).retval === XDP_PASS ? 'pass' : 'drop');
const stateKeys = (): number => { let n = 0; for (const _ of dp.limiter.maps.rate_limit_map.keys()) n++; return n; };
const tracked = (addr: string): boolean => {
  for (const k of dp.limiter.maps.rate_limit_map.keys()) if (k.subarray(8, 12).equals(Buffer.from(addr.split('.').map(Number)))) return true;
  return false;
};

/** Evict every key that was there: a flood of new keys three times the map, no cap on new states. */
async function churn(): Promise<void> {
  const cfg = dp.limiter.config().new_states_per_sec;
  dp.limiter.setConfig({ new_states_per_sec: 0xffffffff });
  await flood(0, 3 * STATE_MAX, '10.200.0.1');
  dp.limiter.setConfig({ new_states_per_sec: cfg });
}

test('dry-run never drops: over the aggregate, every packet passes and counts as a would-drop', async () => {
  // The measurement that found it: an aggregate of 10 packets let 5 of 3,000 through in dry-run.
  setup([{ id: 0, alg: 'token', pps: 1000 }, { id: 1, src: ['10.77.0.0/16'], alg: 'token', pps: 100, action: 'dry-run', aggregate: { pps: 10, burst: 10 } }]);
  const d = await flood(1, 3000);
  assert.equal(d.dropped, 0, 'dropped in dry-run');
  assert.equal(d.passed, 3000);
  assert.ok(d.pass >= 1 && d.pass <= 10, `within the aggregate's burst: ${d.pass}`);
  assert.equal(d.dryrun, 3000 - d.pass, 'every other packet is a would-drop');
  assert.equal(d.aggregate, 0, 'counted as DRYRUN, not as an aggregate drop');
});

test('dry-run never drops: a contended state is a would-drop; enforced, it is CONTENDED', async () => {
  setup([{ id: 0, alg: 'token', pps: 1000 }, { id: 1, src: ['10.78.0.0/16'], alg: 'token', pps: 100, action: 'dry-run' }]);
  dp.setCasFail(true);
  try {
    const c0 = dp.limiter.counters(1);
    for (let i = 0; i < 20; i++) assert.equal(await verdict('10.78.0.1'), 'pass');
    assert.deepEqual({ ...delta(c0, dp.limiter.counters(1)), newStates: 0 }, { passed: 20, dropped: 0, pass: 0, dryrun: 20, untracked: 0, untrackedOver: 0, aggregate: 0, contended: 0, newStates: 0 });
    dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 1000 }, { id: 1, src: ['10.78.0.0/16'], alg: 'token', pps: 100 }] });
    const c1 = dp.limiter.counters(1);
    for (let i = 0; i < 20; i++) assert.equal(await verdict('10.78.0.1'), 'drop');
    assert.equal(delta(c1, dp.limiter.counters(1)).contended, 20);
  } finally {
    dp.setCasFail(false);
  }
});

test('dry-run never drops: past the new-state cap and the untracked budget, still a would-drop', async () => {
  setup([{ id: 0, alg: 'token', pps: 10, action: 'dry-run' }], 1000);
  const d = await flood(0, 5000);
  assert.equal(d.dropped, 0);
  assert.deepEqual([d.pass, d.untracked, d.dryrun], [1000, 10, 3990]);
});

test('past its rate of new states a CPU lets untracked sources share one key\'s limit, not the aggregate', async () => {
  // Default aggregate (16,384 keys at the key's rate): before, 48,990 of these passed.
  setup([{ id: 0, alg: 'token', pps: 10 }], 1000);
  for (let i = 0; i < 10; i++) assert.equal(await verdict('10.1.1.1'), 'pass');
  const d = await flood(0, 50_000);
  // 999 new keys tracked (the one tracked source took one of the cap's burst of 1,000), then the
  // untracked share one key's burst (10) and everything past it is dropped.
  assert.deepEqual([d.pass, d.newStates, d.untracked, d.untrackedOver, d.dropped], [999, 999, 10, 48_991, 48_991]);
  assert.equal(await verdict('10.1.1.1'), 'drop', 'the tracked source keeps its limit');
  // A second later: a second's worth of new states, and of the untracked budget (10 a second).
  dp.setNow(T0 + 1_000_000_000n);
  const later = await flood(0, 5000);
  assert.deepEqual([later.newStates, later.untracked, later.untrackedOver], [1000, 10, 3990]);
});

test('with every default, never-seen sources get at most the new-state cap plus one key\'s limit per CPU', async () => {
  setup([{ id: 0 }]); // fixed window, 1,000 packets/s, default aggregate, 100,000 new states/s
  const d = await flood(0, 150_000);
  assert.equal(d.newStates, 100_000);
  assert.equal(d.untracked, 1000, 'one key\'s window');
  assert.equal(d.passed, 101_000);
  assert.equal(d.dropped, 49_000);
});

test('a blocked key that a flood evicts stays blocked for its whole duration', async () => {
  setup([{ id: 0, alg: 'token', pps: 1_000_000 }, { id: 1, src: ['10.5.0.0/16'], alg: 'token', pps: 1, ppsBurst: 2, action: 'block', blockMs: 30_000 }], 1000);
  assert.deepEqual([await verdict('10.5.0.1'), await verdict('10.5.0.1'), await verdict('10.5.0.1')], ['pass', 'pass', 'drop']);
  await churn();
  assert.equal(tracked('10.5.0.1'), false, 'the flood evicted the blocked key\'s state');
  // Back with the new-state cap spent by a flood: neither untracked nor fresh, still blocked.
  await flood(0, 2000);
  dp.setNow(T0 + 1_000_000_000n);
  const c0 = dp.limiter.counters(1);
  assert.equal(await verdict('10.5.0.1'), 'drop');
  assert.equal(Number(dp.limiter.counters(1).reason_packets[Reason.BLOCKED]! - c0.reason_packets[Reason.BLOCKED]!), 1);
  await churn();
  dp.setNow(T0 + 29_999_000_000n);
  assert.equal(await verdict('10.5.0.1'), 'drop', 'blocked 1 ms before the end');
  await churn();
  dp.setNow(T0 + 30_000_000_000n);
  assert.equal(await verdict('10.5.0.1'), 'pass', 'free at 30 s');
});

test('a key over its limit regains nothing when a flood evicts it', async () => {
  setup([{ id: 0, alg: 'token', pps: 1_000_000 }, { id: 1, src: ['10.6.0.0/16'], alg: 'token', pps: 1, ppsBurst: 3 }, { id: 2, src: ['10.7.0.0/16'], alg: 'fixed', pps: 3 }]);
  for (const src of ['10.6.0.1', '10.7.0.1']) {
    assert.deepEqual([await verdict(src), await verdict(src), await verdict(src), await verdict(src)], ['pass', 'pass', 'pass', 'drop']);
  }
  await churn();
  assert.equal(tracked('10.6.0.1') || tracked('10.7.0.1'), false, 'evicted');
  assert.equal(await verdict('10.6.0.1'), 'drop', 'token bucket: still empty');
  assert.equal(await verdict('10.7.0.1'), 'drop', 'fixed window: still spent');
  dp.setNow(T0 + 1_000_000_000n);
  await churn();
  assert.deepEqual([await verdict('10.6.0.1'), await verdict('10.6.0.1')], ['pass', 'drop'], 'a second refills one packet');
  assert.deepEqual([await verdict('10.7.0.1'), await verdict('10.7.0.1'), await verdict('10.7.0.1'), await verdict('10.7.0.1')], ['pass', 'pass', 'pass', 'drop'], 'a new window');
});

test('an over-limit record is written once per pass, and an expired one is deleted when looked up', async () => {
  setup([{ id: 0, alg: 'token', pps: 1_000_000 }, { id: 1, src: ['10.8.0.0/16'], alg: 'token', pps: 1, ppsBurst: 1 }]);
  const pen = dp.coll.maps.get('sl_penalty')!;
  const entries = (): number => { let n = 0; for (const _ of pen.keys()) n++; return n; };
  assert.equal(await verdict('10.8.0.1'), 'pass');
  assert.equal(entries(), 0, 'a key within its limit has no record');
  for (let i = 0; i < 100; i++) assert.equal(await verdict('10.8.0.1'), 'drop');
  assert.equal(entries(), 1);
  assert.equal(stateKeys(), 1);
  await churn();
  dp.setNow(T0 + 2_000_000_000n); // the bucket is full again: the record says nothing more
  assert.equal(await verdict('10.8.0.2'), 'pass');
  assert.equal(entries(), 1, 'another key does not touch it');
  assert.equal(await verdict('10.8.0.1'), 'pass', 'full again after 1 s');
  assert.equal(entries(), 0, 'the expired record was deleted');
});

test('counters add up: every packet of a flood has one verdict', async () => {
  setup([{ id: 0, alg: 'token', pps: 10 }], 1000);
  const d = await flood(0, 20_000);
  assert.equal(d.passed + d.dropped, 20_000);
  assert.equal(d.pass + d.untracked + d.untrackedOver, 20_000);
});

test('the control plane\'s sweep deletes the records that expired and keeps the others', async () => {
  setup([{ id: 0, alg: 'token', pps: 1_000_000 }, { id: 1, src: ['10.9.0.0/16'], alg: 'token', pps: 1, ppsBurst: 1 },
    { id: 2, src: ['10.10.0.0/16'], alg: 'token', pps: 1, ppsBurst: 1, action: 'block', blockMs: 60_000 }]);
  for (const src of ['10.9.0.1', '10.9.0.2', '10.10.0.1']) assert.deepEqual([await verdict(src), await verdict(src)], ['pass', 'drop']);
  const pen = dp.coll.maps.get('sl_penalty')!;
  assert.equal(sweepPenalties(pen, T0), 0, 'nothing expired yet');
  assert.equal(sweepPenalties(pen, T0 + 2_000_000_000n), 2, 'the two over-limit records, full again after 1 s');
  assert.equal(sweepPenalties(pen, T0 + 59_999_000_000n), 0, 'the block lasts 60 s');
  assert.equal(sweepPenalties(pen, T0 + 60_000_000_000n), 1);
});

test('with sl_penalty full, a CPU tries a record at most once per retry interval, and again after it', async () => {
  // Without the interval, every drop of every key that found the store full retried the write (a
  // failed hash update per packet: at a million sources over their limit, three times the cost of a
  // drop), and every drop of a key its rule would block retried the block.
  setup([{ id: 0, alg: 'token', pps: 1_000_000 }, { id: 1, src: ['10.11.0.0/16'], alg: 'token', pps: 1, ppsBurst: 1 },
    { id: 2, src: ['10.12.0.0/16'], alg: 'token', pps: 1, ppsBurst: 1, action: 'block', blockMs: 60_000 }]);
  const pen = dp.coll.maps.get('sl_penalty')!;
  const entries = (): number => { let n = 0; for (const _ of pen.keys()) n++; return n; };
  const fillers: Buffer[] = [];
  const far = encodePenalty({ until: 1n << 62n });
  for (let i = 0; i < pen.maxEntries; i++) {
    const k = encodeKey6({ rule_id: 999, plen: 32, flags: 0, addr: Buffer.concat([Buffer.from([10, 250, i >> 8, i & 255]), Buffer.alloc(12)]) });
    pen.update(k, far);
    fillers.push(k);
  }
  const full = (): number => Number(dp.limiter.globalCounters().reason_packets[Reason.PENALTY_FULL]!);
  const f0 = full();
  assert.deepEqual([await verdict('10.11.0.1'), await verdict('10.11.0.1'), await verdict('10.11.0.1')], ['pass', 'drop', 'drop']);
  assert.equal(full() - f0, 2, 'each drop without a record is counted');
  // Room for one record, within the retry interval of the failed write: not tried.
  pen.delete(fillers.pop()!);
  assert.deepEqual([await verdict('10.11.0.2'), await verdict('10.11.0.2')], ['pass', 'drop']);
  assert.equal(entries(), pen.maxEntries - 1, 'no write within the interval');
  assert.equal(await verdict('10.12.0.1'), 'pass');
  assert.equal(await verdict('10.12.0.1'), 'drop', 'a key its rule blocks is held by the limit');
  assert.equal(entries(), pen.maxEntries - 1);
  assert.equal(full() - f0, 4);
  // After the interval, the next drop writes its record (and a block is kept again).
  dp.setNow(T0 + BigInt(Bounds.PEN_RETRY_NS));
  assert.equal(await verdict('10.12.0.1'), 'drop');
  assert.equal(entries(), pen.maxEntries, 'written after the interval');
  assert.equal(full() - f0, 4);
  dp.setNow(T0 + 1_000_000_000n + BigInt(Bounds.PEN_RETRY_NS));
  assert.equal(await verdict('10.12.0.1'), 'drop', 'blocked: a refilled bucket does not let it pass');
  for (const k of fillers) pen.delete(k);
});

test('a blocked key is dropped on its state (its word holds the end); a word that does not sends it to the record', async () => {
  const END = T0 + 30_000_000_000n;
  setup([{ id: 0, alg: 'token', pps: 1_000_000 }, { id: 1, src: ['10.13.0.0/16'], alg: 'token', pps: 1, ppsBurst: 1, action: 'block', blockMs: 30_000 }]);
  const pen = dp.coll.maps.get('sl_penalty')!;
  const { key } = encodeStateKey({ rule_id: 1, family: 4, plen: 32, addr: Buffer.concat([Buffer.from([10, 13, 0, 1]), Buffer.alloc(12)]) });
  const state = (): ReturnType<typeof decodeKeyState> => decodeKeyState(dp.limiter.maps.rate_limit_map.lookup(key)!);
  assert.deepEqual([await verdict('10.13.0.1'), await verdict('10.13.0.1')], ['pass', 'drop']);
  assert.equal(state().blocked, true);
  assert.equal(state().word, END, 'the word holds the block\'s end');
  const pk = [...pen.keys()][0]!;
  const pv = Buffer.from(pen.lookup(pk)!);
  assert.equal(decodePenalty(pv).blocked_until, END);
  // The bucket has refilled; with the record out of the way the state alone keeps the block.
  dp.setNow(T0 + 2_000_000_000n);
  pen.delete(pk);
  assert.equal(await verdict('10.13.0.1'), 'drop', 'blocked by the state');
  pen.update(pk, pv);
  // A word that says nothing of the end (an epoch change resets it): the record decides, and puts it back.
  const v = Buffer.from(dp.limiter.maps.rate_limit_map.lookup(key)!);
  v.writeBigUInt64LE(0n, 0);
  dp.limiter.maps.rate_limit_map.update(key, v);
  assert.equal(await verdict('10.13.0.1'), 'drop', 'blocked by the record');
  assert.equal(state().word, END);
  // A word further away than the rule's block lasts (a charge raced with the block's start): the record.
  v.writeBigUInt64LE(END + 1_000_000_000_000n, 0);
  dp.limiter.maps.rate_limit_map.update(key, v);
  assert.equal(await verdict('10.13.0.1'), 'drop');
  assert.equal(state().word, END);
  dp.setNow(END - 1_000_000n);
  assert.equal(await verdict('10.13.0.1'), 'drop', '1 ms before the end');
  // The end: limited again, from the word it had when blocked (the record's), which time has refilled.
  dp.setNow(END);
  assert.equal(await verdict('10.13.0.1'), 'pass');
  assert.equal(state().blocked, false);
  assert.notEqual(state().word, END, 'the word counts again');
  assert.equal(await verdict('10.13.0.1'), 'drop', 'over its limit again (and blocked again)');
  assert.equal(state().word, END + 30_000_000_000n);
});
