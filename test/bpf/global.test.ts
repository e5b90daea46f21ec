/**
 * Issue 14, the data path of a global rule (SL_RF_GLOBAL): the kernel records each key of the rule
 * in sl_fleet_cand (what it met, what passed), lets the agent's grant in sl_fleet_grant decide while
 * it holds (drops past it are GLOBAL), and falls back to the rule's own limit (its local: rate)
 * without a grant or once the grant has lapsed. Rules that are not global never touch either map.
 * Test build, frozen clock.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { decodeFleetCand, encodeFleetGrant, KeyFlags, Reason } from '../../src/generated/types';
import type { RuleSpec } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const T0 = 50_000_000_000n;
const SRC = '10.60.0.7';
const udp = (src = SRC): Buffer => pkt().eth().ipv4({ src, dst: '198.51.100.1' }).udp({ sport: 1000, dport: 53 }).build();
const maps = () => ({ cand: dp.coll.maps.get('sl_fleet_cand')!, grant: dp.coll.maps.get('sl_fleet_grant')! });

/** The candidate key of SRC under rule 1 (struct sl_key6, as sl_wide_key builds it). */
function keyOf(src = SRC, rule = 1): Buffer {
  const k = Buffer.alloc(20);
  k.writeUInt16LE(rule, 0);
  k[2] = 32;
  k[3] = KeyFlags.V4;
  src.split('.').forEach((o, i) => { k[4 + i] = Number(o); });
  return k;
}

function setup(rule: Partial<RuleSpec>): void {
  dp.setNow(T0);
  dp.clearState();
  const { cand, grant } = maps();
  for (const m of [cand, grant]) for (const k of [...m.keys()]) m.delete(k);
  dp.limiter.applyPolicy({ rules: [{ id: 0, pps: 1_000_000 }, { id: 1, proto: 17, aggregate: null, ...rule }] });
}

async function send(n: number, src = SRC): Promise<number> {
  let passed = 0;
  for (let i = 0; i < n; i++) if ((await dp.run(udp(src))) === 'pass') passed++;
  return passed;
}
const reason = (r: number): number => Number(dp.limiter.counters(1).reason_packets[r]!);
const cand = (src = SRC): { used: bigint; seen: bigint } | undefined => {
  const v = maps().cand.lookup(keyOf(src));
  return v ? decodeFleetCand(v) : undefined;
};

test('without a grant, a global rule is held by its local limit, and its key is recorded as a candidate', async () => {
  setup({ pps: 1000, scope: 'global', localPps: 30 });
  assert.equal(await send(50), 30, 'the local: fallback (30 per window) decides');
  assert.deepEqual(cand(), { used: 30n, seen: 50n });
});

test('a live grant decides alone: up to its cap, then GLOBAL drops, whatever the local limit', async () => {
  setup({ pps: 1000, scope: 'global', localPps: 30 });
  assert.equal(await send(10), 10);
  const before = reason(Reason.GLOBAL);
  maps().grant.update(keyOf(), encodeFleetGrant({ cap: 110n, until: T0 + 1_000_000_000n }));
  assert.equal(await send(150), 100, 'from used 10 to the cap of 110, past the local 30');
  assert.equal(reason(Reason.GLOBAL) - before, 50);
  assert.deepEqual(cand(), { used: 110n, seen: 160n });
});

test('a lapsed grant (the agent or Redis gone) leaves the key to its local limit again', async () => {
  setup({ pps: 1000, scope: 'global', localPps: 30 });
  maps().grant.update(keyOf(), encodeFleetGrant({ cap: 5n, until: T0 + 100_000_000n }));
  assert.equal(await send(10), 5);
  dp.setNow(T0 + 100_000_000n);
  assert.equal(await send(50), 30, 'the grant held until T0 + 100 ms; then the local window of 30');
});

test('a rule that is not global records no candidates and ignores grants', async () => {
  setup({ pps: 30 });
  maps().grant.update(keyOf(), encodeFleetGrant({ cap: 1000n, until: T0 + 1_000_000_000n }));
  assert.equal(await send(50), 30);
  assert.equal(cand(), undefined);
  assert.equal([...maps().cand.keys()].length, 0);
});

test('scope global: the policy compiler refuses what the fleet cannot share', () => {
  assert.throws(() => dp.limiter.applyPolicy({ rules: [{ id: 0 }, { id: 1, alg: 'token', scope: 'global' }] }), /fixed windows/);
  assert.throws(() => dp.limiter.applyPolicy({ rules: [{ id: 0 }, { id: 1, bps: 100000, scope: 'global' }] }), /byte limit/);
  assert.throws(() => dp.limiter.applyPolicy({ rules: [{ id: 0 }, { id: 1, localPps: 5 }] }), /needs scope global/);
});
