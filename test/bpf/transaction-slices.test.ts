/**
 * A large change written in slices (Limiter.applyAsync, what the daemon and the CLI use): 20,000
 * list entries and 20,000 GeoIP prefixes are compiled and written with the event loop running in
 * between (here after every step: slice 0), and it is still one transaction. Packets sent through
 * the program at every pause meet the old policy whole; one flip at the end makes the new one
 * live; another change while one is being written is refused; and what is written is exactly what
 * the synchronous apply writes. Counted, not timed (the lag is measured by bench/lists.ts).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { decodeGeoVal, Reason } from '../../src/generated/types';
import type { GeoEntry } from '../../src/limiter/limiter';
import type { Lists } from '../../src/limiter/lists';
import type { RuleSpec } from '../../src/limiter/policy';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load({ maxListEntries: 32768 }); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const udp = (src: string): Buffer => pkt().eth().ipv4({ src, dst: '198.51.100.1' }).udp({ sport: 1000, dport: 9 }).build();
const hosts = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}.${i >> 8}.${i & 255}`);
const geo = (first: number, n: number): GeoEntry[] => Array.from({ length: n }, (_, i) => ({ family: 4, plen: 32, addr: Buffer.from([172, first, i >> 8, i & 255, ...Array(12).fill(0)]), tier: 1 + (i % 3) }));

/** What the program decides for one frame, by the global counters (lists) or the verdict. */
async function decide(frame: Buffer): Promise<string> {
  const g0 = dp.limiter.globalCounters();
  const v = await dp.run(frame);
  const g = dp.limiter.globalCounters();
  for (const [name, r] of [['DENYLIST', Reason.DENYLIST], ['ALLOWLIST', Reason.ALLOWLIST]] as const) {
    if (g.reason_packets[r]! > g0.reason_packets[r]!) return `${v} ${name}`;
  }
  return v;
}

/**
 * Both halves of a trie, each as a sorted list of hex key (without the half byte) = value (the
 * flags of a list entry; the tier of a GeoIP prefix, whose version is the half's own).
 */
function halves(name: 'sl_lists' | 'sl_geo'): string[][] {
  const out: string[][] = [[], []];
  const m = dp.limiter.maps[name];
  for (const b of m.batches({ batchSize: 4096 })) {
    for (let i = 0; i < b.count; i++) {
      const k = b.keys.subarray(i * m.keySize, (i + 1) * m.keySize);
      const v = b.values.subarray(i * m.valueBufferSize, (i + 1) * m.valueBufferSize);
      out[k[4]! & 1]!.push(`${k.toString('hex', 0, 4)}${k.toString('hex', 5)}=${name === 'sl_geo' ? decodeGeoVal(v).tier : v.toString('hex')}`);
    }
  }
  return out.map((h) => h.sort());
}

const RULES: RuleSpec[] = [{ id: 0, alg: 'token', pps: 1_000_000 }];

test('20,000 list entries and 20,000 GeoIP prefixes in slices: the old policy whole at every pause, one flip, the same entries as at once', async () => {
  dp.setNow(1_000_000_000n);
  const before: Lists = { mgmt: [], deny: hosts('10.11', 5000), allow: [] };
  dp.limiter.apply({ policy: { rules: RULES }, geo: { entries: geo(1, 3000), hash: 1n }, lists: before });
  const v0 = dp.limiter.version();
  assert.equal(await decide(udp('10.11.0.7')), 'drop DENYLIST');
  assert.equal(await decide(udp('10.12.0.7')), 'pass');

  const next: Lists = { mgmt: [], deny: hosts('10.12', 20_000), allow: ['10.11.0.0/16'] };
  let finished = false;
  const running = dp.limiter.applyAsync({ policy: { rules: RULES }, geo: { entries: geo(2, 20_000), hash: 2n }, lists: next }, 0).then((r) => { finished = true; return r; });
  let pauses = 0;
  let refused = '';
  const seen = new Set<string>();
  while (!finished) {
    await new Promise<void>((res) => setImmediate(res));
    if (finished) break;
    pauses++;
    if (pauses === 3) {
      try {
        dp.limiter.apply({ malformedDrop: true });
      } catch (e) {
        refused = (e as Error).message;
      }
    }
    if (pauses % 5) continue;
    const verdicts = `${await decide(udp('10.11.0.7'))} / ${await decide(udp('10.12.0.7'))}`;
    // Read before the flip (the version still the old one after the frames): the old half decided.
    if (dp.limiter.version() === v0) seen.add(verdicts);
  }
  const r = await running;
  assert.equal(r.listEntries, 20_001);
  assert.ok(pauses >= 40, `the event loop ran ${pauses} times while the change was written`);
  assert.ok(seen.size > 0, 'frames were decided while the change was being written');
  assert.deepEqual([...seen], ['drop DENYLIST / pass'], 'every frame met the old policy whole');
  assert.match(refused, /one change at a time/, 'a second change while one is written is refused');
  assert.equal(dp.limiter.version(), v0 + 1, 'one flip');
  assert.equal(await decide(udp('10.11.0.7')), 'pass ALLOWLIST');
  assert.equal(await decide(udp('10.12.0.7')), 'drop DENYLIST');

  // The same change at once writes the other half: both halves now hold the same entries.
  const live = v0 + 1;
  dp.limiter.apply({ policy: { rules: RULES }, geo: { entries: geo(2, 20_000), hash: 2n }, lists: next });
  assert.equal(dp.limiter.version(), live + 1);
  for (const name of ['sl_lists', 'sl_geo'] as const) {
    const [h0, h1] = halves(name);
    assert.equal(h0!.length, name === 'sl_lists' ? 20_001 : 20_000, name);
    assert.deepEqual(h0, h1, `${name}: the sliced write and the one at once wrote the same entries`);
  }
  // And back to small: the halves shrink by difference (deletes in batches).
  await dp.limiter.applyAsync({ policy: { rules: RULES }, geo: null, lists: { mgmt: [], deny: ['10.12.0.7'], allow: [] } }, 0);
  assert.equal(halves('sl_lists')[(live + 2) & 1]!.length, 1);
  assert.equal(halves('sl_geo')[(live + 2) & 1]!.length, 0);
  assert.equal(await decide(udp('10.11.0.7')), 'pass');
  assert.equal(await decide(udp('10.12.0.7')), 'drop DENYLIST');
});
