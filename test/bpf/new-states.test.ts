/**
 * The cap on new states per CPU (sl_config.new_states_per_sec): past it, a new key of a rule with
 * an aggregate limit is not tracked: the untracked keys share one key's limit on each CPU (reason
 * UNTRACKED within it, UNTRACKED_OVER past it) and the aggregate, keys already tracked
 * keep their limits, a rule without an aggregate still tracks every key, and the budget refills
 * with time. Test build, frozen clock, every run pinned to CPU 0 (the budget is per CPU).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { numPossibleCpus } from '../../src/ebpf';
import { Reason, Verdict, type Counters } from '../../src/generated/types';
import type { RuleSpec } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath, XDP_DROP, XDP_PASS } from '../lib/datapath';
import { pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const T0 = 5_000_000_000n;
const udp = (src: string): Buffer => pkt().eth().ipv4({ src, dst: '198.51.100.1' }).udp({ sport: 1000, dport: 9 }).build();
const TOKEN: RuleSpec = { id: 0, alg: 'token', pps: 10, aggregate: { pps: 1_000_000_000 } };

function setup(rule: RuleSpec, perSec: number): void {
  dp.setSalt(false);
  dp.setNow(T0);
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [rule] });
  dp.limiter.setConfig({ new_states_per_sec: perSec });
  // A fresh budget: the per-CPU GCRA time of the new-state cap back to 0.
  const m = dp.coll.maps.get('sl_newstate')!;
  m.update(Buffer.alloc(4), Buffer.alloc(m.valueBufferSize));
}

function delta(a: Counters, b: Counters): { pass: number; untracked: number; newStates: number; drop: number; limit: number } {
  return {
    pass: Number(b.reason_packets[Reason.PASS]! - a.reason_packets[Reason.PASS]!),
    untracked: Number(b.reason_packets[Reason.UNTRACKED]! - a.reason_packets[Reason.UNTRACKED]!),
    newStates: Number(b.new_states - a.new_states),
    drop: Number(b.packets[Verdict.DROP]! - a.packets[Verdict.DROP]!),
    limit: Number(b.reason_packets[Reason.LIMIT]! - a.reason_packets[Reason.LIMIT]!),
  };
}

/** `n` packets, each from a new source (salted keys), on CPU 0. */
async function newSources(n: number): Promise<ReturnType<typeof delta>> {
  const before_ = dp.limiter.counters(0);
  dp.setSalt(true);
  try {
    await dp.prog.runOnCpu(0, udp('10.77.0.1'), { repeat: n });
  } finally {
    dp.setSalt(false);
  }
  return delta(before_, dp.limiter.counters(0));
}

const keys = (): number => {
  let n = 0;
  for (const _ of dp.limiter.maps.rate_limit_map.keys()) n++;
  return n;
};

test('past its budget of new states a CPU stops tracking new keys; they share one key\'s limit', async () => {
  setup(TOKEN, 1000);
  // A source tracked before the flood, taken to its limit (burst 10).
  for (let i = 0; i < 10; i++) assert.equal((await dp.prog.runOnCpu(0, udp('10.1.1.1'))).retval, XDP_PASS);
  const d = await newSources(5000);
  // Burst: one second's worth, 1000, at a frozen clock; the one tracked source took one of them.
  // The untracked share one key's burst (10); the rest is dropped.
  assert.deepEqual(d, { pass: 999, untracked: 10, newStates: 999, drop: 3991, limit: 0 });
  assert.equal(keys(), 1000);
  // The tracked source keeps its limit while new keys go untracked.
  assert.equal((await dp.prog.runOnCpu(0, udp('10.1.1.1'))).retval, XDP_DROP);
  // Half a second later half a second's worth of new keys is tracked again.
  dp.setNow(T0 + 500_000_000n);
  const later = await newSources(2000);
  assert.equal(later.newStates, 500);
  assert.equal(later.untracked, 5, 'half a second of one key\'s rate');
  // A new source that arrives when the budget allows is tracked and limited from then on.
  dp.setNow(T0 + 2_000_000_000n);
  let passed = 0;
  for (let i = 0; i < 30; i++) if ((await dp.prog.runOnCpu(0, udp('10.2.2.2'))).retval === XDP_PASS) passed++;
  assert.equal(passed, 10, 'tracked at its first packet: its burst of 10, then its limit');
});

test('untracked packets are charged to the aggregate too, which still holds', async () => {
  setup({ ...TOKEN, aggregate: { pps: 4000, burst: 1010 * numPossibleCpus() - 5 * numPossibleCpus() } }, 1000);
  const d = await newSources(10_000);
  // The aggregate on this CPU: its share of the burst (1005) at a frozen clock; the first 1000 new
  // keys are tracked, 5 of the untracked budget's 10 fit the rest of the share, and the aggregate
  // drops everything past it.
  assert.deepEqual([d.pass, d.newStates, d.untracked], [1000, 1000, 5]);
  assert.equal(d.drop, 10_000 - 1005);
});

test('a rule without an aggregate limit tracks every new key', async () => {
  setup({ ...TOKEN, aggregate: null }, 1000);
  const d = await newSources(3000);
  assert.deepEqual(d, { pass: 3000, untracked: 0, newStates: 3000, drop: 0, limit: 0 });
});

test('above 10^9 new states a second (0xffffffff) there is no cap', async () => {
  setup(TOKEN, 0xffffffff);
  const d = await newSources(5000);
  assert.equal(d.newStates, 5000);
  assert.equal(d.untracked, 0);
});

test('the default (0) is SL_DEFAULT_NEW_STATES a second per CPU', async () => {
  setup(TOKEN, 0);
  const d = await newSources(100_500);
  assert.equal(d.newStates, 100_000);
  assert.equal(d.untracked, 10);
});
