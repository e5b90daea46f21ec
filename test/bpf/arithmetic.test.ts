/**
 * Arithmetic (issue 10, step 5): each algorithm against its own specification, through the kernel
 * with the test clock, over the full accepted ranges (docs/policy.md, Ranges): rates from one per
 * hour to 2^40 per second, per second, minute and hour; bursts up to 2^34; windows 1 ms to 1 h; byte
 * limits with frames from 60 to 1514 bytes; start times that wrap the token/gcra quanta.
 *
 *   token bucket, GCRA: admitted <= rate x t + burst over any interval (GCRA, bytes: plus the last
 *     packet's overdraw, less one byte: its documented spec);
 *   fixed window: admitted <= rate x window + burst in every aligned window;
 *   sliding window: the estimate (prev x share + cur, exact) never exceeds the limit;
 *   all: a stream that conforms to the limit is never dropped (token, GCRA: to the rate less
 *     2^-13, the quanta's bound; sliding: with a margin of one unit and prev / 2^16, the rounding
 *     of its 16-bit share).
 *
 * Then one test for each defect of the issue, each failing on the base commit's objects
 * (SLUICE_TEST_OBJECT=/work/base10/sluice_test.bpf.o). SLUICE_ARITH_SEED replays the random part;
 * SLUICE_ARITH_CONFIGS sets the configurations per property (default 30); SLUICE_ARITH_PERIODS the
 * periods drawn (default 1000,60000,3600000).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DEFAULT_LIMITS } from '../../src/agent/state';
import { Bounds, decodeState, encodeState } from '../../src/generated/types';
import { policyOf } from '../../src/agent/protection';
import { limitsFrom } from '../../src/cli/common';
import { defaultRuleOf } from '../../src/config/load';
import { parsePolicy } from '../../src/config/policy-file';
import { ALG_BY_NAME, derive, paramsOf, type AlgName } from '../../src/limiter/models';
import { compilePolicy, PolicyError, type RuleSpec } from '../../src/limiter/policy';
import { parseRatePer } from '../../src/limiter/units';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { pkt } from '../lib/packet';
import { rng } from '../lib/rng';

const SEED = Number(process.env.SLUICE_ARITH_SEED ?? Date.now() % 1_000_000_007);
const CONFIGS = Number(process.env.SLUICE_ARITH_CONFIGS ?? 30);
const N = 200;
console.log(`# arithmetic: seed ${SEED} (SLUICE_ARITH_SEED=${SEED} replays), ${CONFIGS} configurations per property`);


/** A whole number log-uniformly in [lo, hi]. */
function logU(r: () => number, lo: number, hi: number): bigint {
  const x = Math.exp(Math.log(lo) + r() * (Math.log(hi) - Math.log(lo)));
  const n = BigInt(Math.round(x));
  return n < BigInt(lo) ? BigInt(lo) : n > BigInt(hi) ? BigInt(hi) : n;
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
/** SLUICE_ARITH_PERIODS=1000 keeps to rates per second (what a base object without periods can run). */
const PERIODS = (process.env.SLUICE_ARITH_PERIODS ?? '1000,60000,3600000').split(',').map(Number);
const MAX_RATE = 2 ** 40;
const MAX_BURST = 2 ** 34;

let dp: TestDatapath;
before(async () => { dp = await TestDatapath.load(process.env.SLUICE_TEST_OBJECT ? { object: process.env.SLUICE_TEST_OBJECT } : {}); });
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const SRC = '203.0.113.50';
const frames = new Map<number, Buffer>();
/** A UDP/IPv4 frame of exactly size bytes (60 .. 1514). */
function frameOf(size: number): Buffer {
  let f = frames.get(size);
  if (!f) {
    f = pkt().eth().ipv4({ src: SRC, dst: '198.51.100.1' }).udp({ sport: 1, dport: 2 }).payload(size - 42).build();
    assert.equal(f.length, size);
    frames.set(size, f);
  }
  return f;
}

interface Sent { t: bigint; c: bigint; pass: boolean }

/** Apply one rule (the default rule) afresh and run the stream through the kernel. */
async function runStream(rule: RuleSpec, stream: { t: bigint; size: number }[], dim: Dim): Promise<Sent[]> {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [rule] });
  const out: Sent[] = [];
  for (const p of stream) {
    dp.setNow(p.t);
    const v = await dp.run(frameOf(p.size));
    out.push({ t: p.t, c: dim === 'pps' ? 1n : BigInt(p.size), pass: v === 'pass' });
  }
  return out;
}

type Dim = 'pps' | 'bps';

interface Limit { alg: AlgName; dim: Dim; R: bigint; P: bigint; B: bigint; W: bigint; spec: RuleSpec }

function ruleOf(alg: AlgName, dim: Dim, R: bigint, P: number, B: bigint, W?: number): RuleSpec {
  const base: RuleSpec = { id: 0, alg, aggregate: null, ...(W !== undefined ? { windowMs: W } : {}) };
  return dim === 'pps'
    ? { ...base, pps: R, ppsPeriodMs: P, ppsBurst: B }
    : { ...base, pps: null, bps: R, bpsPeriodMs: P, bpsBurst: B };
}

function accepted(spec: RuleSpec): boolean {
  try {
    compilePolicy({ rules: [spec] }, 2);
    return true;
  } catch (e) {
    if (e instanceof PolicyError) return false;
    throw e;
  }
}

/** A random limit of alg over the accepted ranges (retrying what the control plane refuses). */
function randomLimit(r: () => number, alg: AlgName, dim: Dim): Limit {
  for (;;) {
    const P = pick(r, PERIODS);
    const R = logU(r, 1, MAX_RATE);
    if (alg === 'token' || alg === 'gcra') {
      const B = r() < 0.2 ? 0n : logU(r, dim === 'pps' ? 1 : 1514, MAX_BURST);
      const spec = ruleOf(alg, dim, R, P, B);
      const Beff = B || R;
      if (dim === 'bps' && Beff < 1514n) continue;
      if (accepted(spec)) return { alg, dim, R, P: BigInt(P), B: Beff, W: 0n, spec };
    } else {
      const W = Number(logU(r, 1, 3_600_000));
      const B = r() < 0.5 ? 0n : logU(r, 1, 1 << 20);
      const spec = ruleOf(alg, dim, R, P, B, W);
      if (accepted(spec)) return { alg, dim, R, P: BigInt(P), B, W: BigInt(W), spec };
    }
  }
}

const sizeOf = (r: () => number, dim: Dim, max = 1514): number => (dim === 'pps' ? 64 : Math.min(max, r() < 0.3 ? pick(r, [60, 64, 1514]) : 60 + Math.floor(r() * 1455)));
const describe = (l: Limit): string => `${l.alg} ${l.dim} ${l.R}/${l.P} ms burst ${l.B}${l.W ? ` window ${l.W} ms` : ''}`;
const startTime = (r: () => number): bigint => logU(r, 1e9, 2 ** 52); // wraps the quanta at the larger shifts

/** Gaps around the limit's own time scale: bursts, near the rate, and refills. */
function randomStream(r: () => number, l: Limit): { t: bigint; size: number }[] {
  const pns = Number(l.P) * 1e6;
  const unitNs = pns / Number(l.R);
  const scale = l.W ? Number(l.W) * 1e6 : Number(l.B) * unitNs;
  let t = startTime(r);
  const out: { t: bigint; size: number }[] = [];
  for (let i = 0; i < N; i++) {
    const size = sizeOf(r, l.dim);
    const cost = l.dim === 'pps' ? 1 : size;
    const g = r();
    const gap = g < 0.3 ? 0 : g < 0.92 ? cost * unitNs * r() : scale * 1.5 * r();
    t += BigInt(Math.floor(Math.min(gap, 1e15)));
    out.push({ t, size });
  }
  return out;
}

/**
 * All N packets at one instant, the largest frames: past a limit that holds fewer, some must drop
 * (so that "the streams went over their limits" is known, not left to the random streams).
 */
async function overload(r: () => number, l: Limit, dim: Dim): Promise<{ sent: Sent[]; mustDrop: boolean }> {
  const t = startTime(r);
  const size = dim === 'pps' ? 64 : 1514;
  const sent = await runStream(l.spec, Array.from({ length: N }, () => ({ t, size })), dim);
  const units = BigInt(N) * (dim === 'pps' ? 1n : BigInt(size));
  const holds = l.W ? (l.R * l.W) / l.P + l.B : l.B;
  return { sent, mustDrop: holds + BigInt(size) < units }; // GCRA may overdraw by one frame
}

// ---- token bucket and GCRA -------------------------------------------------------------------

/** Over any interval [t_i, t_j] of admitted packets: the spec's bound, exactly (multiplied by P). */
function checkBucketAdmitted(l: Limit, sent: Sent[]): void {
  const ok = sent.filter((s) => s.pass);
  const pns = l.P * 1_000_000n;
  for (let i = 0; i < ok.length; i++) {
    let sum = 0n;
    for (let j = i; j < ok.length; j++) {
      sum += ok[j]!.c;
      // token: sum <= B + R dt / P; gcra: the packets before j fit B - 1 + R dt / P.
      const lhs = (l.alg === 'token' ? sum : sum - ok[j]!.c + 1n) * pns;
      const rhs = l.B * pns + l.R * (ok[j]!.t - ok[i]!.t);
      if (lhs > rhs) {
        assert.fail(`${describe(l)}: admitted ${sum} units in ${ok[j]!.t - ok[i]!.t} ns (packets ${i}..${j} of those passed), more than rate x t + burst allows (seed ${SEED})`);
      }
    }
  }
}

/**
 * A stream conforming to the ideal bucket (exact rationals) at the rate less 2^-13, burst B:
 * often as tight as that allows.
 */
function conformingBucketStream(r: () => number, l: Limit): { t: bigint; size: number }[] {
  const pns = l.P * 1_000_000n;
  const S = l.R * 8191n; // time in 1/S ns: a unit costs P x 8192 of them at rate R x 8191 / 8192
  const depth = (l.alg === 'token' ? l.B : l.B - 1n) * pns * 8192n;
  let tat = 0n;
  let t = startTime(r);
  const unitNs = Number(pns) / Number(l.R);
  const out: { t: bigint; size: number }[] = [];
  for (let i = 0; i < N; i++) {
    const size = sizeOf(r, l.dim, l.alg === 'token' && l.dim === 'bps' ? Number(l.B < 1514n ? l.B : 1514n) : 1514);
    const cost = (l.dim === 'pps' ? 1n : BigInt(size)) * pns * 8192n;
    if (r() < 0.5) t += BigInt(Math.floor(Math.min(1e15, r() * Number(cost) / Number(S) * 2)));
    // The earliest time at or after t at which the packet conforms.
    const need = l.alg === 'token' ? tat + cost - depth : tat - depth;
    if (need > t * S) t = (need + S - 1n) / S;
    const now = t * S;
    tat = (tat > now ? tat : now) + cost;
    out.push({ t, size });
    void unitNs;
  }
  return out;
}

for (const alg of ['token', 'gcra'] as const) {
  for (const dim of ['pps', 'bps'] as const) {
    test(`${alg} ${dim}: admitted <= rate x t + burst over any interval, and a conforming stream is never dropped (seed ${SEED})`, async () => {
      const r = rng(SEED ^ (alg.length * 7919) ^ (dim === 'pps' ? 17 : 4099));
      let drops = 0;
      let mustDrop = false;
      for (let k = 0; k < CONFIGS; k++) {
        const l = randomLimit(r, alg, dim);
        const sent = await runStream(l.spec, randomStream(r, l), dim);
        checkBucketAdmitted(l, sent);
        drops += sent.filter((s) => !s.pass).length;
        const o = await overload(r, l, dim);
        checkBucketAdmitted(l, o.sent);
        if (o.mustDrop) mustDrop = true;
        drops += o.sent.filter((s) => !s.pass).length;
        const conf = await runStream(l.spec, conformingBucketStream(r, l), dim);
        const dropped = conf.findIndex((s) => !s.pass);
        if (dropped >= 0) assert.fail(`${describe(l)}: conforming packet ${dropped} (t ${conf[dropped]!.t}, ${conf[dropped]!.c} units) dropped (seed ${SEED})`);
      }
      assert.ok(drops > 0 || !mustDrop, 'a stream over its limit must see drops');
    });
  }
}

// ---- windows -----------------------------------------------------------------------------------

const budgetOf = (l: Limit): bigint => (l.R * l.W) / l.P + l.B;

function checkFixedAdmitted(l: Limit, sent: Sent[]): void {
  const wns = l.W * 1_000_000n;
  const per = new Map<bigint, bigint>();
  for (const s of sent) if (s.pass) per.set(s.t / wns, (per.get(s.t / wns) ?? 0n) + s.c);
  for (const [k, sum] of per) {
    if (sum * l.P > l.R * l.W + l.B * l.P) assert.fail(`${describe(l)}: window ${k} admitted ${sum} units, more than rate x window + burst (seed ${SEED})`);
  }
}

function conformingFixedStream(r: () => number, l: Limit): { t: bigint; size: number }[] {
  const wns = l.W * 1_000_000n;
  const budget = budgetOf(l);
  let t = startTime(r);
  let win = -1n;
  let used = 0n;
  const out: { t: bigint; size: number }[] = [];
  for (let i = 0; i < N; i++) {
    const size = sizeOf(r, l.dim, Number(budget < 1514n ? budget : 1514n));
    const c = l.dim === 'pps' ? 1n : BigInt(size);
    if (r() < 0.3) t += BigInt(Math.floor(r() * Number(wns) / 4));
    if (t / wns !== win) { win = t / wns; used = 0n; }
    if (used + c > budget) { t = (win + 1n) * wns + BigInt(Math.floor(r() * 3)); win = t / wns; used = 0n; }
    used += c;
    out.push({ t, size });
  }
  return out;
}

/** Units admitted in window k, and in window k before index i. */
function slidingCounts(sent: Sent[], wns: bigint): { prev: bigint; cur: bigint }[] {
  const total = new Map<bigint, bigint>();
  return sent.map((s) => {
    const k = s.t / wns;
    const r = { prev: total.get(k - 1n) ?? 0n, cur: total.get(k) ?? 0n };
    if (s.pass) total.set(k, r.cur + s.c);
    return r;
  });
}

function checkSlidingAdmitted(l: Limit, sent: Sent[]): void {
  const wns = l.W * 1_000_000n;
  const L = budgetOf(l);
  const counts = slidingCounts(sent, wns);
  sent.forEach((s, i) => {
    if (!s.pass) return;
    const { prev, cur } = counts[i]!;
    const e = s.t % wns;
    // prev x (w - e) / w + cur + c <= L, exactly.
    if (prev * (wns - e) + (cur + s.c) * wns > L * wns) {
      assert.fail(`${describe(l)}: packet ${i} admitted with estimate ${Number(prev) * Number(wns - e) / Number(wns) + Number(cur)} + ${s.c} over the limit ${L} (seed ${SEED})`);
    }
  });
}

/** The sliding window's conformance with the margin its rounding needs (see the file's comment). */
function slidingFits(prev: bigint, cur: bigint, c: bigint, e: bigint, wns: bigint, L: bigint): boolean {
  return prev * (wns - e) * 65536n + prev * wns + (1n + cur + c) * wns * 65536n <= L * wns * 65536n;
}

function conformingSlidingStream(r: () => number, l: Limit): { t: bigint; size: number }[] {
  const wns = l.W * 1_000_000n;
  const L = budgetOf(l);
  const total = new Map<bigint, bigint>();
  let t = startTime(r);
  const out: { t: bigint; size: number }[] = [];
  for (let i = 0; i < N; i++) {
    const size = sizeOf(r, l.dim, Number(L / 2n < 1514n ? L / 2n : 1514n));
    const c = l.dim === 'pps' ? 1n : BigInt(size);
    if (2n + c > L) break;
    if (r() < 0.3) t += BigInt(Math.floor(r() * Number(wns) / 4));
    for (;;) {
      const k = t / wns;
      const prev = total.get(k - 1n) ?? 0n;
      const cur = total.get(k) ?? 0n;
      const end = (k + 1n) * wns;
      if (slidingFits(prev, cur, c, t - k * wns, wns, L)) break;
      if (!slidingFits(prev, cur, c, wns - 1n, wns, L)) { t = end; continue; }
      let lo = t;
      let hi = end - 1n; // fits at hi
      while (lo < hi) {
        const mid = (lo + hi) / 2n;
        if (slidingFits(prev, cur, c, mid - k * wns, wns, L)) hi = mid; else lo = mid + 1n;
      }
      t = lo;
      break;
    }
    total.set(t / wns, (total.get(t / wns) ?? 0n) + c);
    out.push({ t, size });
  }
  return out;
}

for (const alg of ['fixed', 'sliding'] as const) {
  for (const dim of ['pps', 'bps'] as const) {
    const what = alg === 'fixed' ? 'admitted <= rate x window + burst in every aligned window' : 'the estimate never exceeds the limit';
    test(`${alg} ${dim}: ${what}, and a conforming stream is never dropped (seed ${SEED})`, async () => {
      const r = rng(SEED ^ (alg.length * 104729) ^ (dim === 'pps' ? 31 : 8191));
      let drops = 0;
      let mustDrop = false;
      for (let k = 0; k < CONFIGS; k++) {
        const l = randomLimit(r, alg, dim);
        const sent = await runStream(l.spec, randomStream(r, l), dim);
        if (alg === 'fixed') checkFixedAdmitted(l, sent); else checkSlidingAdmitted(l, sent);
        drops += sent.filter((s) => !s.pass).length;
        const o = await overload(r, l, dim);
        if (alg === 'fixed') checkFixedAdmitted(l, o.sent); else checkSlidingAdmitted(l, o.sent);
        if (o.mustDrop) mustDrop = true;
        drops += o.sent.filter((s) => !s.pass).length;
        const stream = alg === 'fixed' ? conformingFixedStream(r, l) : conformingSlidingStream(r, l);
        const conf = await runStream(l.spec, stream, dim);
        const dropped = conf.findIndex((s) => !s.pass);
        if (dropped >= 0) assert.fail(`${describe(l)}: conforming packet ${dropped} (t ${conf[dropped]!.t}, ${conf[dropped]!.c} units) dropped (seed ${SEED})`);
      }
      assert.ok(drops > 0 || !mustDrop, 'a stream over its limit must see drops');
    });
  }
}

// ---- the issue's defects, one by one -------------------------------------------------------------

const T0 = 1_000_000_000_000n;
const at = async (t: bigint, f: Buffer = frameOf(64)): Promise<'pass' | 'drop'> => {
  dp.setNow(t);
  return dp.run(f);
};

test('token bucket: rate = burst = 3 admits 3 at once (rounding the depth and each cost up separately admitted 2)', async () => {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 3, ppsBurst: 3, aggregate: null }] });
  const v = [await at(T0), await at(T0), await at(T0), await at(T0)];
  assert.deepEqual(v, ['pass', 'pass', 'pass', 'drop'], 'the whole burst of 3, then nothing');
  assert.equal(await at(T0 + 333_333_333n), 'drop', 'a third of a second less 1/3 ns: not yet');
  assert.equal(await at(T0 + 333_333_334n), 'pass', 'one unit refilled after 1/3 s');
});

test('token bucket: 20 GB/s has a one-second bucket (it had 78 ms: burst x 1e9 overflowed)', async () => {
  const f = frameOf(1514);
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: null, bps: 20_000_000_000, aggregate: null }] });
  // The test clock may go back: a backlog of half a second, as if 10 GB had just passed.
  assert.equal(await at(T0, f), 'pass');
  assert.equal(await at(T0 - 500_000_000n, f), 'pass', 'half a second of backlog fits a one-second bucket');
  assert.equal(await at(T0 - 1_000_010_000n, f), 'drop', 'a second of backlog does not');
});

test('token bucket: 18.45 GB/s takes bursts (burst x 1e9 wrapped to a bucket of 1 ns: it dropped all but one packet of every burst)', async () => {
  const f = frameOf(1514);
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: null, bps: 18_446_744_074, aggregate: null }] });
  let passed = 0;
  for (let i = 0; i < 100; i++) if ((await at(T0, f)) === 'pass') passed++;
  assert.equal(passed, 100, 'a burst of 100 frames (151 kB) into a bucket of one second (18.45 GB)');
});

test('GCRA: 64-byte frames at 10 GB/s are held to the rate (rounding each cost down over-admitted 7%), and 7e10 B/s still limits (it was unlimited from 6.4e10 B/s)', async () => {
  dp.clearState();
  const spec: RuleSpec = { id: 0, alg: 'gcra', pps: null, bps: 10_000_000_000, bpsBurst: 1514, aggregate: null };
  const l: Limit = { alg: 'gcra', dim: 'bps', R: 10_000_000_000n, P: 1000n, B: 1514n, W: 0n, spec };
  const stream = Array.from({ length: 3000 }, (_, i) => ({ t: T0 + BigInt(i) * 3n, size: 64 }));
  const sent = await runStream(spec, stream, 'bps');
  checkBucketAdmitted(l, sent);
  const passed = sent.filter((s) => s.pass).length;
  assert.ok(passed >= 1425, `passed ${passed} frames of 64 bytes in 9 us at 10 GB/s (the rate: 1406, plus the burst)`);

  const spec7: RuleSpec = { id: 0, alg: 'gcra', pps: null, bps: 70_000_000_000, bpsBurst: 1514, aggregate: null };
  const all = await runStream(spec7, Array.from({ length: 200 }, () => ({ t: T0, size: 64 })), 'bps');
  const n = all.filter((s) => s.pass).length;
  assert.ok(n <= 24, `${n} of 200 frames of 64 bytes at one instant passed a 1514-byte burst`);
});

test('fixed and sliding: a window budget below one packet or one full frame is refused with a way out (999/s over 1 ms dropped everything); 999/s over 2 ms admits 1 per window', async () => {
  for (const alg of ['fixed', 'sliding'] as const) {
    assert.throws(() => compilePolicy({ rules: [{ id: 0, alg, pps: 999, windowMs: 1 }] }, 2), /999\/s over a 1 ms window is 0 packets per window: no packet could ever pass; use a window of at least 2 ms or a burst/);
    assert.throws(() => compilePolicy({ rules: [{ id: 0, alg, pps: null, bps: 1_000_000, windowMs: 1 }] }, 2), /less than one full-size frame \(1514 bytes\).*at least 2 ms/);
    assert.throws(() => compilePolicy({ rules: [{ id: 0, alg, pps: 3, ppsPeriodMs: 60_000, windowMs: 1000 }] }, 2), /3\/min over a 1000 ms window is 0 packets per window.*at least 20000 ms/);
  }
  assert.throws(() => compilePolicy({ rules: [{ id: 0, alg: 'sliding', pps: null, bps: 100_000_000 }] }, 2), /more than the sliding window counts \(16777215\): use a shorter window, fixed or token/);
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'fixed', pps: 999, windowMs: 2, aggregate: null }] });
  let passed = 0;
  for (let i = 0; i < 100; i++) if ((await at(T0 + BigInt(i) * 500_000n)) === 'pass') passed++;
  assert.equal(passed, 25, 'one per aligned 2 ms window over 50 ms');
});

test('sliding window: a key blocked for 16 windows is not charged its old count when the block ends (the 4-bit window id aliased)', async () => {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'sliding', pps: 100, windowMs: 100, action: 'block', blockMs: 1600, aggregate: null }] });
  const t0 = 10_000n * 100_000_000n; // a window boundary
  let passed = 0;
  for (let i = 0; i < 11; i++) if ((await at(t0 + BigInt(i))) === 'pass') passed++;
  assert.equal(passed, 10, '10 per 100 ms window, then blocked');
  for (let t = t0 + 50_000_000n; t < t0 + 1_600_000_000n; t += 50_000_000n) assert.equal(await at(t), 'drop', 'blocked');
  // 16 windows later: the same window number mod 16, and last_seen fresh from the blocked packets.
  assert.equal(await at(t0 + 1_600_000_010n), 'pass', 'after the block, a fresh window');
});

test('sliding window: a current word is read as current whatever last_seen says (a CPU that read last_seen before another CPU\'s first packet after idling zeroed the count)', async () => {
  // The interleaving, made deterministic: CPU A reads last_seen (the key idled), CPU B's first packet
  // writes last_seen and charges the word, then A reads the word. The test writes the stale
  // last_seen A would have read under B's charged word (the one poke of state in these tests: no
  // control-plane path leads to this state but a race).
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'sliding', pps: 10, aggregate: null }] });
  const t0 = 5000n * SEC;
  let passed = 0;
  for (let i = 0; i < 10; i++) if ((await at(t0 + BigInt(i))) === 'pass') passed++;
  assert.equal(passed, 10);
  const m = dp.limiter.maps.rate_limit_map;
  const keys = [...m.keys()];
  assert.equal(keys.length, 1);
  const st = decodeState(m.lookup(keys[0]!)!);
  m.update(keys[0]!, encodeState({ ...st, seen: Number(((t0 - 100n * SEC) >> BigInt(Bounds.SEEN_SHIFT)) & 0xffffn) }));
  assert.equal(await at(t0 + 1_000_000n), 'drop', 'the window holds 10 already: the 11th is dropped');
});

test('sliding window: its state word alone says which window it counts (no other field is read)', async () => {
  // A key idle for exactly 2^16 windows (65.536 s at 1 ms) is the one case that reads old counts;
  // one window more or less, and any idle time before it, start afresh.
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'sliding', pps: 5000, windowMs: 1, aggregate: null }] });
  const t0 = 1_000_000n * 1_000_000n;
  for (let i = 0; i < 6; i++) await at(t0 + BigInt(i));
  assert.equal(await at(t0 + 10n), 'drop', '5 per 1 ms window');
  for (const idle of [2n, 16n, 17n, 65_535n, 65_538n]) {
    dp.clearState();
    for (let i = 0; i < 5; i++) await at(t0 + BigInt(i));
    assert.equal(await at(t0 + idle * 1_000_000n), 'pass', `idle for ${idle} windows`);
  }
});

test('SCTP: a rule with proto sctp and a port matches SCTP to that destination port (there was no SCTP branch in the parser)', async () => {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [
    { id: 0, alg: 'fixed', pps: 1_000_000, aggregate: null },
    { id: 1, alg: 'fixed', proto: 132, dport: [5000, 5001], pps: 2, aggregate: null },
  ] });
  const sctp = (dport: number): Buffer => pkt().eth().ipv4({ src: SRC, dst: '198.51.100.1' }).sctp({ sport: 40000, dport }).payload(20).build();
  const v = [];
  const dropped0 = dp.limiter.counters(1).packets[1]!;
  for (let i = 0; i < 5; i++) v.push(await at(T0, sctp(5001)));
  assert.deepEqual(v, ['pass', 'pass', 'drop', 'drop', 'drop'], 'SCTP to port 5001: the sctp rule, 2 per second');
  assert.equal(dp.limiter.counters(1).packets[1]! - dropped0, 3n, 'dropped by rule 1');
  for (let i = 0; i < 5; i++) assert.equal(await at(T0, sctp(5002)), 'pass', 'another port: the default rule');
  const v6 = pkt().eth().ipv6({ src: '2001:db8::50', dst: '2001:db8::1' }).sctp({ sport: 1, dport: 5000 }).build();
  const w = [];
  for (let i = 0; i < 3; i++) w.push(await at(T0, v6));
  assert.deepEqual(w, ['pass', 'pass', 'drop'], 'SCTP over IPv6 too');
});

test('ICMP: a port rule without proto does not match ICMP (type/code were read as the port)', async () => {
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [
    { id: 0, alg: 'fixed', pps: 1_000_000, aggregate: null },
    { id: 1, alg: 'fixed', dport: [2048, 2048], pps: 1, aggregate: null }, // 2048 = echo request (8) << 8 | 0
  ] });
  const echo = pkt().eth().ipv4({ src: SRC, dst: '198.51.100.1' }).icmp({ type: 8, code: 0 }).payload(8).build();
  const seen = (): bigint => dp.limiter.counters(1).packets[0]! + dp.limiter.counters(1).packets[1]!;
  const before = seen();
  for (let i = 0; i < 5; i++) assert.equal(await at(T0, echo), 'pass', 'echo requests: the default rule');
  assert.equal(seen(), before, 'rule 1 never matched');
  const udp = pkt().eth().ipv4({ src: SRC, dst: '198.51.100.1' }).udp({ sport: 1, dport: 2048 }).payload(8).build();
  assert.deepEqual([await at(T0, udp), await at(T0, udp)], ['pass', 'drop'], 'UDP to port 2048: the port rule');
});

// ---- rates below one per second ---------------------------------------------------------------

const HOUR = 3_600_000_000_000n;
const SEC = 1_000_000_000n;

test('3/min and 100/h through a policy file: exact, the default burst is one period, windows are the period', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-arith-'));
  const file = join(dir, 'policy.yaml');
  writeFileSync(file, `defaults: { algorithm: fixed, rate: 100/h }
rules:
  - name: ssh
    match: { proto: tcp, dst_port: 22 }
    limit: { algorithm: token, rate: 3/min }
  - name: login
    match: { proto: tcp, dst_port: 443 }
    limit: { algorithm: sliding, rate: 30/min }
`);
  const pf = parsePolicy(readFileSync(file, 'utf8'), file);
  assert.equal(pf.limits.windowMs, 3_600_000, 'the default rule: a window of one hour');
  dp.clearState();
  dp.limiter.applyPolicy({ rules: [defaultRuleOf(pf.limits), ...pf.rules] });
  const tcp = (dport: number): Buffer => pkt().eth().ipv4({ src: SRC, dst: '198.51.100.1' }).tcp({ sport: 40000, dport, flags: 'S' }).build();

  // ssh, token 3/min, burst 3 (one minute's worth): 3 at once, then one every 20 s exactly.
  const t0 = 1000n * HOUR;
  let passed = 0;
  for (let i = 0; i < 10; i++) if ((await at(t0, tcp(22))) === 'pass') passed++;
  assert.equal(passed, 3, 'the burst: one minute of 3/min');
  assert.equal(await at(t0 + 20n * SEC - 1n, tcp(22)), 'drop');
  assert.equal(await at(t0 + 20n * SEC, tcp(22)), 'pass');
  passed = 0;
  for (let s = 21n; s < 621n; s++) if ((await at(t0 + s * SEC, tcp(22))) === 'pass') passed++;
  assert.equal(passed, 30, 'one per second offered for 10 min: 3 per minute');

  // the default rule, fixed 100/h in aligned hours: 100 in the first, none more until the next.
  passed = 0;
  for (let i = 0; i < 150; i++) if ((await at(t0 + BigInt(i) * 10n * SEC, tcp(80))) === 'pass') passed++;
  assert.equal(passed, 100, '150 over 25 min: 100 pass');
  assert.equal(await at(t0 + HOUR - 1n, tcp(80)), 'drop');
  assert.equal(await at(t0 + HOUR, tcp(80)), 'pass', 'the next hour');

  // login, sliding 30/min over a minute's window.
  passed = 0;
  for (let i = 0; i < 60; i++) if ((await at(t0 + BigInt(i) * SEC, tcp(443))) === 'pass') passed++;
  assert.equal(passed, 30, '30 in the first minute');
});

test('100/h through the `sluice set` path (limitsFrom, the command-line parser): 100 an hour, not 100 a second', async () => {
  const limits = { ...DEFAULT_LIMITS, ...limitsFrom({ rate: parseRatePer('100/h', 'rate'), algorithm: 'gcra' }) };
  assert.equal(limits.ratePeriodMs, 3_600_000);
  dp.clearState();
  dp.limiter.applyPolicy(policyOf({ limits, rules: [] }));
  const t0 = 2000n * HOUR;
  let passed = 0;
  for (let i = 0; i < 400; i++) if ((await at(t0 + BigInt(i) * 18n * SEC)) === 'pass') passed++;
  // 2 h at one per 18 s (twice the rate): the burst of 100, then one per 36 s.
  assert.equal(passed, 100 + 200 - 1, `passed ${passed}`);
});

test('rates per period: the units parser and its errors', () => {
  assert.deepEqual(parseRatePer('3/min'), { units: 3, periodMs: 60_000 });
  assert.deepEqual(parseRatePer('100/h'), { units: 100, periodMs: 3_600_000 });
  assert.deepEqual(parseRatePer('10k/s'), { units: 10_000, periodMs: 1000 });
  assert.deepEqual(parseRatePer('2M'), { units: 2_000_000, periodMs: 1000 });
  assert.throws(() => parseRatePer('2m'), /"m" is ambiguous/, 'm is neither mega nor minute: refused');
  assert.throws(() => parseRatePer('0.5/s'), /not a whole number of units per period \(write e\.g\. 30\/min for 0\.5\/s\)/);
  assert.throws(() => parseRatePer('3/day'), /"\/day" is not a period \(use \/s, \/min or \/h\)/);
  assert.throws(() => compilePolicy({ rules: [{ id: 0, pps: 3, ppsPeriodMs: 1234 }] }, 2), /ppsPeriodMs 1234 must be 1000 \(a second\), 60000 \(a minute\) or 3600000 \(an hour\)/);
  // The model's derivation is what the data path holds: a unit of 3/min is 20 s exactly.
  const d = derive(paramsOf(3n, 0n, ALG_BY_NAME.token, 1000, 60_000n));
  assert.equal(d.shift, 0n);
  assert.equal(d.inc1, 20_000_000_000n);
  assert.equal(d.limit, 60_000_000_000n);
});
