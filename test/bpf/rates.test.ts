/**
 * A key's rate from two readings of its state (src/limiter/rates.ts), against what the data path
 * decided: packets run through the test build with BPF_PROG_TEST_RUN at clock times the test sets,
 * each verdict counted, the state maps read between them with walkStates at those times, and the
 * passes and drops the estimator derives compared with the verdicts counted in between.
 *
 *  - sound, for every algorithm: over random traces (streams under and over the limit, pauses,
 *    bursts) read at random times, the true passes always lie within the bounds and the drops are
 *    exact;
 *  - exact where the word says it all: a source over its limit under a token bucket or GCRA (its
 *    backlog outlasts the interval), any source under a sliding window across one window change,
 *    any source under a fixed window within one window; a source under its limit under a token
 *    bucket or GCRA is marked bucket_may_have_filled, its bounds holding the truth and at most its
 *    limit; a fixed window's change is marked window_changed;
 *  - marked when not known: a first reading, a key re-initialised (its rule's epoch changed), a key
 *    evicted and made again.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Rule } from '../../src/generated/types';
import type { Limiter } from '../../src/limiter/limiter';
import type { AlgName } from '../../src/limiter/models';
import { between, precise, rateRule, RateTracker, readingOf, type Span } from '../../src/limiter/rates';
import { encodeStateKey } from '../../src/limiter/state';
import { walkStates } from '../../src/limiter/top';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';
import { rng } from '../lib/rng';

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const S = 1_000_000_000n;
const show = (x: unknown): string => JSON.stringify(x, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));
const T0 = 100n * S;
const ALGS: AlgName[] = ['fixed', 'sliding', 'token', 'gcra'];

const frameOf = (src: string): Buffer => pkt().eth().ipv4({ src, dst: '198.51.100.1' }).udp({ sport: 1, dport: 2 }).payload(50).build();
const HOT = '203.0.113.1';
const CALM = '203.0.113.2';
const FRAMES = new Map([HOT, CALM].map((a) => [a, frameOf(a)]));

function liveRules(l: Limiter): Map<number, Rule> {
  const v = l.version();
  return new Map(l.rulesOf(v & 1).filter((r) => r.version === v).map((r) => [r.id, r]));
}

function stateOf(address: string): Buffer | undefined {
  const addr = Buffer.alloc(16);
  Buffer.from(address.split('.').map(Number)).copy(addr);
  return dp.limiter.maps.rate_limit_map.lookup(encodeStateKey({ rule_id: 0, family: 4, plen: 32, addr }).key);
}

/** True passes and drops of each source since the last reading. */
class Truth {
  passed = new Map<string, number>();
  dropped = new Map<string, number>();
  async send(src: string, at: bigint): Promise<void> {
    dp.setNow(at);
    const v = await dp.run(FRAMES.get(src)!);
    const m = v === 'pass' ? this.passed : this.dropped;
    m.set(src, (m.get(src) ?? 0) + 1);
  }
  take(src: string): { passed: number; dropped: number } {
    const r = { passed: this.passed.get(src) ?? 0, dropped: this.dropped.get(src) ?? 0 };
    this.passed.delete(src);
    this.dropped.delete(src);
    return r;
  }
}

/** Packets of a source at `pps` from `from` for `ns` (evenly spaced), merged in time order. */
function stream(src: string, pps: number, from: bigint, ns: bigint): { src: string; at: bigint }[] {
  const gap = S / BigInt(pps);
  const out: { src: string; at: bigint }[] = [];
  for (let t = from; t < from + ns; t += gap) out.push({ src, at: t });
  return out;
}
const merged = (...xs: { src: string; at: bigint }[][]): { src: string; at: bigint }[] => xs.flat().sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));

const LIMITS = (alg: AlgName): { id: 0; alg: AlgName; pps: number; ppsBurst?: number; windowMs?: number } =>
  ({ id: 0, alg, pps: 1000, ...(alg === 'token' || alg === 'gcra' ? { ppsBurst: 1000 } : { windowMs: 1000 }) });

/** Run packets, reading both sources' spans at `reads` (times); returns per read the span and the truth. */
async function traced(packets: { src: string; at: bigint }[], reads: bigint[], widen: () => [bigint, bigint] = () => [0n, 0n]): Promise<{ src: string; at: bigint; span: Span; truth: { passed: number; dropped: number } }[]> {
  const truth = new Truth();
  const rule = () => rateRule(liveRules(dp.limiter).get(0)!);
  const last = new Map<string, ReturnType<typeof readingOf>>();
  const out: { src: string; at: bigint; span: Span; truth: { passed: number; dropped: number } }[] = [];
  let i = 0;
  for (const at of reads) {
    for (; i < packets.length && packets[i]!.at < at; i++) await truth.send(packets[i]!.src, packets[i]!.at);
    for (const src of [HOT, CALM]) {
      const v = stateOf(src);
      const t = truth.take(src);
      if (!v) continue;
      const [early, late] = widen();
      const r = readingOf(v, at - early, at + late);
      const prev = last.get(src);
      last.set(src, r);
      if (prev) out.push({ src, at, span: between(rule(), rule(), prev, r), truth: t });
    }
  }
  return out;
}

describe('rates from two readings of a state, through the kernel with the test clock', () => {
  for (const alg of ALGS) {
    it(`${alg}: over random traces read at random times, the passes lie within the bounds and the drops are exact`, async () => {
      dp.clearState();
      dp.limiter.applyPolicy({ rules: [LIMITS(alg)] });
      const r = rng(0x5eed + alg.length);
      // Phases of 0.2 to 1.5 s: each source at a random rate from idle to 3x the limit.
      const packets: { src: string; at: bigint }[][] = [];
      let t = T0;
      for (let k = 0; k < 8; k++) {
        const ns = BigInt(Math.floor(200 + r() * 1300)) * 1_000_000n;
        for (const src of [HOT, CALM]) {
          const pps = [0, 50, 200, 900, 1500, 3000][Math.floor(r() * 6)]!;
          if (pps) packets.push(stream(src, pps, t + BigInt(Math.floor(r() * 1e6)), ns));
        }
        t += ns;
      }
      const reads: bigint[] = [];
      for (let at = T0 + 50_000_000n; at < t; at += BigInt(Math.floor(50 + r() * 1400)) * 1_000_000n) reads.push(at);
      // Half the readings as user space knows them: within a range (a coarse clock's lag, a walk's span).
      const spans = await traced(merged(...packets), reads, () => (r() < 0.5 ? [0n, 0n] : [BigInt(Math.floor(r() * 30e6)), BigInt(Math.floor(r() * 5e6))]));
      assert.ok(spans.length > 10);
      let exact = 0;
      for (const s of spans) {
        const what = `${s.src} at ${Number(s.at - T0) / 1e9}s: true ${show(s.truth)}, span ${show(s.span)}`;
        assert.equal(s.span.unknown, undefined, what);
        assert.equal(s.span.dropped, s.truth.dropped, `drops: ${what}`);
        assert.ok(s.span.passedLo <= s.truth.passed && s.truth.passed <= s.span.passedHi, `passes within the bounds: ${what}`);
        if (s.span.passedLo === s.span.passedHi) exact++;
        if (process.env.RATES_DEBUG) console.log(what);
      }
      // Not a vacuous pass: most spans are exact (the rest are the cases the estimator cannot know).
      assert.ok(exact > 0, `${exact} of ${spans.length} spans exact`);
    });
  }

  for (const alg of ['token', 'gcra'] as AlgName[]) {
    it(`${alg}: a source over its limit is exact; one under it is marked, bounded by its limit`, async () => {
      dp.clearState();
      dp.limiter.applyPolicy({ rules: [LIMITS(alg)] });
      const spans = await traced(merged(stream(HOT, 2000, T0, 4n * S), stream(CALM, 200, T0, 4n * S)), [T0 + 1500_000_000n, T0 + 2400_000_000n, T0 + 3300_000_000n]);
      assert.equal(spans.length, 4);
      for (const s of spans.filter((x) => x.src === HOT)) {
        assert.equal(s.span.passedLo, s.span.passedHi, `over its limit: one figure (${show(s)})`);
        assert.equal(s.span.passedLo, s.truth.passed);
        assert.ok(s.truth.dropped > 0);
        assert.equal(s.span.dropped, s.truth.dropped);
      }
      for (const s of spans.filter((x) => x.src === CALM)) {
        assert.equal(s.span.bound, 'bucket_may_have_filled', show(s));
        assert.ok(s.span.passedLo <= s.truth.passed && s.truth.passed <= s.span.passedHi, show(s));
        // At most the limit over 0.9 s, plus a packet.
        assert.ok(s.span.passedHi <= 901, show(s));
        assert.equal(s.span.dropped, 0);
      }
    });
  }

  it('sliding: both sources exact across one window change; fixed: exact within a window, bounded across one', async () => {
    for (const alg of ['sliding', 'fixed'] as AlgName[]) {
      dp.clearState();
      dp.limiter.applyPolicy({ rules: [LIMITS(alg)] });
      // Sliding: readings 0.9 s apart, mid-window. Fixed: at 0.05 and 0.95 of each window.
      const reads = alg === 'sliding' ? [T0 + 1500_000_000n, T0 + 2400_000_000n, T0 + 3300_000_000n] : [T0 + 1050_000_000n, T0 + 1950_000_000n, T0 + 3050_000_000n, T0 + 3950_000_000n];
      const spans = await traced(merged(stream(HOT, 2000, T0, 5n * S), stream(CALM, 200, T0, 5n * S)), reads);
      for (const s of spans) {
        const what = `${alg} ${s.src} at ${Number(s.at - T0) / 1e9}s: ${show(s)}`;
        if (alg === 'fixed' && s.at === T0 + 3050_000_000n) {
          // From 1.95 s to 3.05 s: windows 1 and 2 not read at their ends.
          assert.equal(s.span.bound, 'window_changed', what);
          assert.ok(s.span.passedLo <= s.truth.passed && s.truth.passed <= s.span.passedHi, what);
          continue;
        }
        assert.equal(s.span.passedLo, s.span.passedHi, `one figure: ${what}`);
        assert.equal(s.span.passedLo, s.truth.passed, what);
        assert.equal(s.span.dropped, s.truth.dropped, what);
      }
    }
  });

  it('marked when not known: a first reading, a key re-initialised (its epoch changed), a key evicted', async () => {
    dp.clearState();
    dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 1000, ppsBurst: 100 }] });
    const truth = new Truth();
    const tracker = new RateTracker();
    const walk = async (at: bigint) => {
      const w = await walkStates(dp.limiter.maps, liveRules(dp.limiter), 10, { now: at });
      const { interval, rates } = tracker.observe(w, liveRules(dp.limiter));
      return { interval, rates: new Map(w.top.map((e, i) => [e.key, rates[i]!])) };
    };
    for (const p of stream(HOT, 2000, T0, S)) await truth.send(p.src, p.at);
    const first = await walk(T0 + S);
    assert.equal(first.interval, null);
    assert.equal(first.rates.get(`${HOT}/32`)?.rate_unknown, 'first_reading');
    for (const p of merged(stream(HOT, 2000, T0 + S, S / 2n), stream(CALM, 100, T0 + S, S / 2n))) await truth.send(p.src, p.at);
    const second = await walk(T0 + 3n * S / 2n);
    assert.equal(second.interval?.seconds !== undefined, true);
    const hot = second.rates.get(`${HOT}/32`)!;
    assert.equal(hot.rate_unknown, null, JSON.stringify(hot));
    assert.ok(hot.dropped_pps !== null && hot.dropped_pps > 0, JSON.stringify(hot));
    assert.equal(second.rates.get(`${CALM}/32`)?.rate_unknown, 'first_reading');
    // Its rule changed (another algorithm, so a new epoch): the key, not touched since, is read
    // under a rule of another scale; its next packet starts it afresh.
    dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'gcra', pps: 1000, ppsBurst: 100 }] });
    const third = await walk(T0 + 3n * S / 2n);
    assert.equal(third.rates.get(`${HOT}/32`)?.rate_unknown, 'rule_changed');
    for (const p of stream(HOT, 2000, T0 + 3n * S / 2n, S / 2n)) await truth.send(p.src, p.at);
    const fourth = await walk(T0 + 2n * S);
    assert.equal(fourth.rates.get(`${HOT}/32`)?.rate_unknown, 'reinitialised', JSON.stringify(fourth.rates.get(`${HOT}/32`)));
    for (const p of stream(HOT, 2000, T0 + 2n * S, S / 2n)) await truth.send(p.src, p.at);
    const known = (await walk(T0 + 5n * S / 2n)).rates.get(`${HOT}/32`)!;
    assert.equal(known.rate_unknown, null, JSON.stringify(known));
    // Evicted: its entry removed (as the LRU does under a flood of new keys), made again by its next packet.
    const addr = Buffer.alloc(16);
    Buffer.from(HOT.split('.').map(Number)).copy(addr);
    dp.limiter.maps.rate_limit_map.delete(encodeStateKey({ rule_id: 0, family: 4, plen: 32, addr }).key);
    for (const p of stream(HOT, 2000, T0 + 5n * S / 2n, S / 2n)) await truth.send(p.src, p.at);
    const fifth = await walk(T0 + 3n * S);
    assert.equal(fifth.rates.get(`${HOT}/32`)?.rate_unknown, 'evicted', JSON.stringify(fifth.rates.get(`${HOT}/32`)));
  });

  it('precise: a range within 2 packets or 2% is one figure', () => {
    assert.ok(precise(100, 102));
    assert.ok(!precise(100, 103));
    assert.ok(precise(1000, 1020));
    assert.ok(!precise(1000, 1021));
  });
});
