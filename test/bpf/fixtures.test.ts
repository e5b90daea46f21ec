/**
 * Packets in, verdict out: every fixture through BPF_PROG_TEST_RUN on the test build, checking
 * the verdict and that exactly the expected counters moved (packets and bytes), nothing else.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Reason, type Counters } from '../../src/generated/types';
import { FIXTURE_POLICY, FIXTURES, type ReasonName } from './fixtures';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';

let dp: TestDatapath;

before(async () => {
  dp = await TestDatapath.load();
  dp.limiter.applyPolicy(FIXTURE_POLICY);
  dp.setNow(5_000_000_000n);
});
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

function snapshot(): Map<string, Counters> {
  const m = new Map<string, Counters>();
  m.set('global', dp.limiter.globalCounters());
  for (const r of FIXTURE_POLICY.rules) m.set(String(r.id), dp.limiter.counters(r.id));
  return m;
}

for (const f of FIXTURES) {
  test(f.name, async () => {
    dp.limiter.setMalformedDrop(!!f.malformedDrop);
    const before = snapshot();
    const verdict = await dp.run(f.packet, f.repeat ?? 1);
    const afterSnap = snapshot();
    assert.equal(verdict, f.verdict, 'verdict of the last run');

    // Every reason counter of every slot: expected deltas, and zero elsewhere.
    const expected = new Map<string, number>();
    for (const c of f.counts) expected.set(`${c.slot}/${Reason[c.reason as ReasonName]}`, c.packets);
    for (const [slot, b] of before) {
      const a = afterSnap.get(slot)!;
      for (let r = 0; r < b.reason_packets.length; r++) {
        const want = expected.get(`${slot}/${r}`) ?? 0;
        const got = Number(a.reason_packets[r]! - b.reason_packets[r]!);
        assert.equal(got, want, `slot ${slot}, reason ${Object.keys(Reason).find((k) => Reason[k as ReasonName] === r)}: packets`);
        assert.equal(Number(a.reason_bytes[r]! - b.reason_bytes[r]!), want * f.packet.length, `slot ${slot}, reason ${r}: bytes`);
      }
    }
  });
}
