/**
 * A change is one transaction: rules, lists and the malformed verdict are written into the idle
 * half and go live with one flip of the version, so a packet sees the old change or the new one,
 * never new rules with old lists. A change that fails part-way (here: a write into the kernel that
 * fails) leaves the live half as it was; lists larger than the trie's half are refused before any
 * write, naming both numbers.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { BpfMap } from '../../src/ebpf';
import { Reason, RuleFlags } from '../../src/generated/types';
import { Limiter, ListsTooLargeError } from '../../src/limiter/limiter';
import type { RuleSpec } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load({ maxListEntries: 100 }); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const udp = (src: string): Buffer => pkt().eth().ipv4({ src, dst: '198.51.100.1' }).udp({ sport: 1000, dport: 9 }).build();
const truncated = (): Buffer => pkt().eth().ipv4({ src: '192.0.2.9', dst: '198.51.100.1', totalLength: 1400 }).udp({ sport: 1, dport: 2 }).build();

async function decide(frame: Buffer): Promise<string> {
  const g0 = dp.limiter.globalCounters();
  const c0 = dp.limiter.counters(1);
  const v = await dp.run(frame);
  const g = dp.limiter.globalCounters();
  const c = dp.limiter.counters(1);
  for (const [name, r] of [['MGMT', Reason.MGMT], ['DENYLIST', Reason.DENYLIST], ['ALLOWLIST', Reason.ALLOWLIST], ['TRUNCATED', Reason.TRUNCATED]] as const) {
    if (g.reason_packets[r]! > g0.reason_packets[r]!) return `${v} ${name}`;
  }
  if (c.reason_packets[Reason.LIMIT]! > c0.reason_packets[Reason.LIMIT]!) return `${v} rule 1 LIMIT`;
  if (c.reason_packets[Reason.PASS]! > c0.reason_packets[Reason.PASS]!) return `${v} rule 1`;
  return v;
}

const A: RuleSpec[] = [{ id: 0, alg: 'token', pps: 1_000_000 }, { id: 1, src: ['10.1.0.0/16'], alg: 'token', pps: 1_000_000 }];
const B: RuleSpec[] = [{ id: 0, alg: 'token', pps: 1_000_000 }, { id: 1, src: ['10.2.0.0/16'], alg: 'token', pps: 1_000_000 }];

test('rules, lists and the malformed verdict go live together, in one flip', async () => {
  dp.setNow(1_000_000_000n);
  dp.limiter.apply({ policy: { rules: A }, lists: { mgmt: [], deny: ['10.2.0.0/16'], allow: [] }, malformedDrop: false });
  const v1 = dp.limiter.version();
  assert.equal(await decide(udp('10.1.0.1')), 'pass rule 1');
  assert.equal(await decide(udp('10.2.0.1')), 'drop DENYLIST');
  assert.equal(await decide(truncated()), 'pass TRUNCATED', 'passed (counted, then charged to its rule)');
  dp.limiter.apply({ policy: { rules: B }, lists: { mgmt: [], deny: ['10.1.0.0/16'], allow: [] }, malformedDrop: true });
  assert.equal(dp.limiter.version(), v1 + 1, 'one flip');
  assert.equal(await decide(udp('10.2.0.1')), 'pass rule 1');
  assert.equal(await decide(udp('10.1.0.1')), 'drop DENYLIST');
  assert.equal(await decide(truncated()), 'drop TRUNCATED');
  // The old half still holds the old change whole, for the packets that may still read it.
  const old = (v1 & 1);
  const oldLists = [...dp.limiter.maps.sl_lists.keys()].filter((k) => k[4] === old).map((k) => [...k.subarray(8, 12)].join('.'));
  assert.deepEqual(oldLists, ['10.2.0.0']);
});

test('a change that fails part-way leaves the live half as it was', async () => {
  dp.limiter.apply({ policy: { rules: A }, lists: { mgmt: [], deny: ['10.2.0.0/16'], allow: [] }, malformedDrop: false });
  const v = dp.limiter.version();
  // The same data path seen through maps whose list trie fails after 3 writes (as a kill or a
  // full kernel would make it), so the lists of the change are left half written; a batch write
  // fails as the kernel's does, after writing the entries before the one that failed.
  let writes = 0;
  const trie = dp.limiter.maps.sl_lists;
  const failing = new Proxy(trie, {
    get(target, prop, recv) {
      if (prop === 'update') return (k: Uint8Array, val: Uint8Array) => { if (++writes > 3) throw new Error('injected: update failed'); target.update(k, val); };
      if (prop === 'updatePacked') {
        return (b: { count: number; keys: Buffer; values: Buffer }) => {
          const ks = target.keySize;
          const vs = target.valueBufferSize;
          for (let i = 0; i < b.count; i++) {
            if (++writes > 3) throw new Error('injected: update failed');
            target.update(b.keys.subarray(i * ks, (i + 1) * ks), b.values.subarray(i * vs, (i + 1) * vs));
          }
          return b.count;
        };
      }
      if (prop === 'updateBatch') {
        return (ks: Uint8Array[], vs: Uint8Array[]) => {
          ks.forEach((k, i) => { if (++writes > 3) throw new Error('injected: update failed'); target.update(k, vs[i]!); });
          return ks.length;
        };
      }
      const x = Reflect.get(target, prop, recv) as unknown;
      return typeof x === 'function' ? (x as (...a: unknown[]) => unknown).bind(target) : x;
    },
  }) as BpfMap;
  const broken = new Limiter({ ...dp.limiter.maps, sl_lists: failing });
  const deny = Array.from({ length: 10 }, (_, i) => `10.1.${i}.0/24`);
  assert.throws(() => broken.apply({ policy: { rules: B }, lists: { mgmt: [], deny, allow: [] }, malformedDrop: true }), /injected/);
  assert.equal(dp.limiter.version(), v, 'not flipped');
  assert.equal(await decide(udp('10.1.0.1')), 'pass rule 1', 'the old rules and the old lists');
  assert.equal(await decide(udp('10.2.0.1')), 'drop DENYLIST');
  assert.equal(await decide(truncated()), 'pass TRUNCATED', 'the old verdict');
  // And the next change succeeds from there.
  dp.limiter.apply({ policy: { rules: B }, lists: { mgmt: [], deny, allow: [] }, malformedDrop: true });
  assert.equal(await decide(udp('10.1.3.1')), 'drop DENYLIST');
  assert.equal(await decide(udp('10.2.0.1')), 'pass rule 1');
});

test('lists carry over a change of rules alone, and rules a change of lists alone', async () => {
  dp.limiter.apply({ policy: { rules: A }, lists: { mgmt: ['10.9.0.1/32'], deny: ['10.2.0.0/16'], allow: [] }, malformedDrop: true });
  for (let i = 0; i < 3; i++) dp.limiter.applyPolicy({ rules: i % 2 ? A : B }); // three flips: both halves rewritten
  assert.equal(await decide(udp('10.2.0.1')), 'drop DENYLIST');
  assert.equal(await decide(udp('10.9.0.1')), 'pass MGMT');
  assert.equal(await decide(truncated()), 'drop TRUNCATED');
  assert.equal(await decide(udp('10.1.0.1')), 'pass', 'rules B: 10.1/16 is the default rule\'s');
  dp.limiter.applyLists({ mgmt: [], deny: [], allow: ['10.2.0.0/16'] });
  dp.limiter.applyLists({ mgmt: [], deny: [], allow: ['10.2.0.0/16'] });
  assert.equal(await decide(udp('10.2.0.1')), 'pass ALLOWLIST');
  assert.equal(await decide(udp('10.9.0.1')), 'pass');
  assert.equal(dp.limiter.rulesOf(dp.limiter.version() & 1)[1]!.id, 1);
  assert.equal(await decide(udp('10.2.0.1')), 'pass ALLOWLIST');
});

test('lists larger than a half of the trie are refused, naming both numbers, and nothing changes', async () => {
  dp.limiter.apply({ policy: { rules: A }, lists: { mgmt: [], deny: ['10.2.0.0/16'], allow: [] } });
  const v = dp.limiter.version();
  const fits = Array.from({ length: 100 }, (_, i) => `10.3.${i}.0/24`);
  assert.equal(dp.limiter.applyLists({ mgmt: [], deny: fits, allow: [] }), 100, '100 entries fit a half of 100');
  const tooMany = [...fits, '10.4.0.0/24'];
  assert.throws(() => dp.limiter.applyLists({ mgmt: [], deny: tooMany, allow: [] }), (e: unknown) => {
    assert.ok(e instanceof ListsTooLargeError);
    assert.equal(e.code, 'SLUICE_E_LISTS_TOO_LARGE');
    assert.match(e.message, /101 entries.*holds 100 per policy half/);
    return true;
  });
  assert.equal(dp.limiter.version(), v + 1, 'the refused change was not flipped');
  assert.equal(await decide(udp('10.3.99.1')), 'drop DENYLIST');
  assert.equal(await decide(udp('10.2.0.1')), 'pass', 'the 100-entry lists are live (10.2/16 is no longer denied)');
});

test('the default rule alone is read without its half\'s header only while the half holds nothing else: a list or a CIDR rule applies at once', async () => {
  dp.setNow(3_000_000_000n);
  const alone = (): boolean => (dp.limiter.rulesOf(dp.limiter.version() & 1)[0]!.flags & RuleFlags.ALONE) !== 0;
  const only: RuleSpec[] = [{ id: 0, alg: 'token', pps: 1_000_000 }];
  dp.limiter.apply({ policy: { rules: only }, lists: { mgmt: [], deny: [], allow: [] }, malformedDrop: true });
  assert.ok(alone(), 'the default rule alone: SL_RF_ALONE on its slot');
  assert.equal(await decide(udp('10.2.0.1')), 'pass');
  assert.equal(await decide(truncated()), 'drop TRUNCATED', 'a malformed frame still takes the whole path');
  dp.limiter.applyLists({ mgmt: [], deny: ['10.2.0.0/16'], allow: [] });
  assert.ok(!alone(), 'a list in the half: the flag is off');
  assert.equal(await decide(udp('10.2.0.1')), 'drop DENYLIST', 'the deny list applies at once');
  dp.limiter.applyLists({ mgmt: [], deny: [], allow: [] });
  assert.ok(alone());
  assert.equal(await decide(udp('10.2.0.1')), 'pass');
  dp.limiter.applyPolicy({ rules: A });
  assert.ok(!alone(), 'a rule with a source prefix: the flag is off');
  assert.equal(await decide(udp('10.1.0.1')), 'pass rule 1');
  dp.limiter.applyPolicy({ rules: [only[0]!, { id: 1, proto: 17, alg: 'token', pps: 1_000_000 }] });
  assert.ok(!alone(), 'a rule without a source prefix: the flag is off');
  assert.equal(await decide(udp('10.1.0.1')), 'pass rule 1');
});
