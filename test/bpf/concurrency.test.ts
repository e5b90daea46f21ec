/**
 * Concurrency: test runs on both CPUs at once hammer the same key. Each dimension's state is
 * committed with a compare-and-exchange, so the documented bound is exact: never more passes than
 * the budget; fewer only by the runs that gave up after SL_CAS_TRIES (counted as CONTENDED).
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { after, before, test } from 'node:test';
import { Reason } from '../../src/generated/types';
import type { AlgName } from '../../src/limiter/models';
import type { RuleSpec } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const RUNS_PER_CPU = 300_000;
const BUDGET = 100_000;
const packet = pkt().eth().ipv4({ src: '203.0.113.5', dst: '198.51.100.1' }).udp({ sport: 1, dport: 2 }).payload(100).build();

const cases: [string, RuleSpec][] = [
  ['fixed', { id: 0, alg: 'fixed', pps: BUDGET }],
  ['sliding', { id: 0, alg: 'sliding', pps: BUDGET }],
  ['token', { id: 0, alg: 'token', pps: 1000, ppsBurst: BUDGET }],
  ['gcra', { id: 0, alg: 'gcra', pps: 1000, ppsBurst: BUDGET }],
  ['fixed, packets and bytes', { id: 0, alg: 'fixed', pps: BUDGET, bps: BUDGET * packet.length }],
  ['sliding, packets and bytes', { id: 0, alg: 'sliding', pps: BUDGET, bps: BUDGET * packet.length }],
  ['token, packets and bytes', { id: 0, alg: 'token', pps: 1000, ppsBurst: BUDGET, bps: 1_000_000, bpsBurst: BUDGET * packet.length }],
];

for (const [label, rule] of cases) {
  test(`${label}: two CPUs on one key never pass more than the budget`, { skip: availableParallelism() < 2 && 'needs two CPUs' }, async () => {
    dp.clearState();
    dp.limiter.applyPolicy({ rules: [rule as RuleSpec & { alg: AlgName }] });
    dp.setNow(7_000_000_000n); // frozen: nothing refills, nothing rolls
    const before = dp.limiter.counters(0);
    await Promise.all([0, 1].map((cpu) => dp.prog.runOnCpu(cpu, packet, { repeat: RUNS_PER_CPU })));
    const c = dp.limiter.counters(0);
    const pass = Number(c.reason_packets[Reason.PASS]! - before.reason_packets[Reason.PASS]!);
    const limit = Number(c.reason_packets[Reason.LIMIT]! - before.reason_packets[Reason.LIMIT]!);
    const contended = Number(c.reason_packets[Reason.CONTENDED]! - before.reason_packets[Reason.CONTENDED]!);
    assert.equal(pass + limit + contended, 2 * RUNS_PER_CPU, 'every run is counted once');
    assert.ok(pass <= BUDGET, `passed ${pass}, budget ${BUDGET}: over-admission`);
    assert.ok(pass >= BUDGET - contended, `passed ${pass} with ${contended} contended: more lost than the bound`);
    console.log(`${label}: ${pass} passed of budget ${BUDGET}, ${contended} contended, ${limit} over the limit`);
    // Both CPUs really ran on the key (per-CPU counters are summed: look at one CPU's share).
    const perCpu = dp.limiter.maps.stats_map.lookupPerCpu(Buffer.alloc(4));
    assert.ok(perCpu.filter((b) => b.readBigUInt64LE(0) + b.readBigUInt64LE(8) > 0n).length >= 2, 'both CPUs ran');
  });
}
