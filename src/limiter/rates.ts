/**
 * A key's current rate, from readings of its state a known time apart (issue 17: `sluice top`'s
 * packets/s). The 16-byte state (bpf/sluice.h, struct sl_state) keeps no pass counter, so passes
 * are read off the algorithm word with the kernel's own arithmetic (src/limiter/models.ts), and
 * drops off the drop count:
 *
 *  - token bucket, GCRA: a pass moves the word (the time the bucket is full again) by exactly its
 *    cost in quanta while the bucket is not full; a pass that finds it full moves it further (from
 *    now, not from the word). So between two readings the passes are at most the word's advance
 *    past the first reading's effective word, and at least that minus the time the bucket may have
 *    spent full, which is none when the first reading's backlog outlasts the interval (a key over
 *    its limit). A key under its limit sits at a full bucket: its word then says when it last
 *    passed, not how often, and only bounds are known (at most its limit);
 *  - fixed window: the count of the window, exact between readings in one window; across a change
 *    the old window's count after the first reading is lost, so only bounds (the limit) are known;
 *  - sliding window: the word keeps the previous window's count too, so passes are exact across
 *    one window change, bounded across more.
 *
 * Everything is a pair of bounds [lo, hi] that are sound (the true count lies within them); they
 * are equal where the word says it all. The clock a reading is judged by is known only within a
 * range (a rule reads the coarse clock, which lags the fine one by a few ms, and a walk of the map
 * takes time): a reading carries the earliest and latest kernel time it may have happened at, and
 * the bounds hold for every time in that range.
 */
import { Action, Alg, Defaults, KeyFlags, RuleFlags, type Rule } from '../generated/types';
import { backlog, derive, paramsOf, periodMsOf, resolveAlg, type Derived } from './models';

const U64 = (1n << 64n) - 1n;
const u64 = (x: bigint): bigint => x & U64;
/** A u64 difference as a signed number (the words are modulo 2^64, readings are close). */
const signed = (x: bigint): bigint => (u64(x) >= 1n << 63n ? u64(x) - (1n << 64n) : u64(x));

/**
 * How far the data path's clock may be behind the fine clock user space reads (process.hrtime,
 * CLOCK_MONOTONIC): a rule with a time scale of 250 ms or more reads the coarse clock, the time of
 * the last timer tick, which lags by up to a jiffy plus the tick's own delay (2-10 ms measured at
 * HZ=250, test/lab/accuracy.test.ts). 30 ms covers HZ=100 as well.
 */
export const CLOCK_LAG_NS = 30_000_000n;

/** sl_state.drops at or above which the kernel stops counting (SL_DROPS_SAT >> 2). */
export const DROPS_SAT = 0xffff0000 >>> 2;

/** One reading of a key's state. */
export interface Reading {
  word: bigint;
  /** The drop count (sl_state.drops >> 2). */
  dropped: number;
  epoch: number;
  blocked: boolean;
  /** The earliest and latest data-path clock time (ns) the state may have been read at. */
  lo: bigint;
  hi: bigint;
}

/** Why a key's rate is not known. */
export type RateUnknown =
  /** no earlier reading of the key (new, or not among the heaviest before) */
  | 'first_reading'
  /** its state was started afresh between the readings (its rule's epoch changed) */
  | 'reinitialised'
  /** its state was evicted and made again between the readings (its counts went back) */
  | 'evicted'
  /** its rule limits bytes only: the word counts bytes, not packets */
  | 'bytes_only'
  /** a per-rule bucket: every CPU takes leases of it, so its word moves by leases (see `sluice stats`) */
  | 'per_rule'
  /** its rule's limits changed between the readings */
  | 'rule_changed'
  /** its rule is gone */
  | 'no_rule'
  /** it was blocked or unblocked between the readings (a blocked key's word holds the block's end) */
  | 'block_changed';

/** Why a known figure is a range rather than one number. */
export type RateBound =
  /** token bucket or GCRA: the bucket may have been full between the readings (a key under its limit) */
  | 'bucket_may_have_filled'
  /** a window changed between the readings and its last count was not read */
  | 'window_changed'
  /** blocked at a reading: packets dropped while blocked are not counted per key */
  | 'blocked'
  /** a dry-run rule: what it would drop passes uncounted per key */
  | 'dry_run'
  /** the drop count reached its saturation */
  | 'drops_saturated';

/** Passes and drops of one key between two readings (packets, or cost units: GSO segments). */
export interface Span {
  passedLo: number;
  passedHi: number;
  /** Drops counted by its limit (exact unless `bound` says drops_saturated). */
  dropped: number;
  unknown?: RateUnknown;
  bound?: RateBound;
}

/** What the estimator needs of a key's rule: its algorithm and the kernel's derived values. */
export interface RateRule {
  alg: number;
  epoch: number;
  /** The packet dimension's derived values; null for a rule without a packet limit. */
  d: Derived | null;
  dryRun: boolean;
  /** Identifies the arithmetic (a change between readings makes the span unknown). */
  scale: string;
}

export function rateRule(rule: Rule): RateRule {
  const alg = resolveAlg(rule.alg);
  const d = rule.flags & RuleFlags.NO_PKT_LIMIT ? null
    : derive(paramsOf(rule.pkt.rate || BigInt(Defaults.PPS), rule.pkt.burst, alg, rule.window_ms, periodMsOf(rule.flags, 'pkt')));
  const scale = d ? `${alg}|${rule.epoch & 0xffff}|${d.shift}|${d.inc1}|${d.limit}|${d.windowNs}` : `bytes|${rule.epoch & 0xffff}`;
  return { alg, epoch: rule.epoch & 0xffff, d, dryRun: rule.action === Action.DRYRUN, scale };
}

/** Whether a key (its sl_key flags) has a per-key packet word that this module can read. */
export const perRuleKey = (keyFlags: number): boolean => (keyFlags & KeyFlags.PER_RULE) !== 0;

const unknown = (why: RateUnknown): Span => ({ passedLo: 0, passedHi: 0, dropped: 0, unknown: why });

/** Token bucket and GCRA: passes (in units) between readings a and b. */
function tatPasses(d: Derived, a: Reading, b: Reading): { lo: bigint; hi: bigint } | null {
  if (b.word === a.word) return { lo: 0n, hi: 0n };
  const q = (t: bigint): bigint => u64(t << d.shift);
  // The first reading's effective word: the word if the bucket was not full, else now. It grows
  // with now, so it lies between its values at the reading's earliest and latest time.
  const eff = (nq: bigint): bigint => u64(nq + backlog(a.word, nq, d));
  const base = eff(q(a.lo));
  const w2 = signed(b.word - base);
  const a1max = signed(eff(q(a.hi)) - base);
  const nq2max = signed(q(b.hi) - base);
  // A pass leaves the word at least one unit past the effective word, and never farther ahead of
  // its time than a live key can be (stale): anything else is a state made again.
  if (w2 < d.inc1 || w2 > signed(q(b.hi) - base) + d.stale) return null;
  // hi: each pass adds its cost while the bucket is not full, more when it is. lo: the time the
  // bucket may have been full is at most what follows the effective word up to the second reading.
  const hiQ = w2;
  const loQ = w2 - (a1max > nq2max ? a1max : nq2max);
  const inc = d.inc1;
  return { lo: loQ > 0n ? (loQ + inc - 1n) / inc : 0n, hi: hiQ / inc };
}

const MASK32 = 0xffff_ffffn;
const MASK24 = 0xff_ffffn;

/** The windows the data path's clock may have been in at a reading. */
function windowsOf(r: Reading, windowNs: bigint): bigint[] {
  const out: bigint[] = [];
  for (let w = (r.lo < 0n ? 0n : r.lo) / windowNs; w <= r.hi / windowNs && out.length < 4; w++) out.push(w);
  return out;
}

/** Fixed window: passes between readings a and b, as the union over the windows a may have been read in. */
function fixedPasses(d: Derived, a: Reading, b: Reading): { lo: bigint; hi: bigint } | null {
  const limit = d.limit;
  const ws1 = a.word >> 32n;
  const c1 = a.word & MASK32;
  const ws2 = b.word >> 32n;
  const c2 = b.word & MASK32;
  if (ws2 === ws1) return c2 >= c1 ? { lo: c2 - c1, hi: c2 - c1 } : null;
  let lo: bigint | undefined;
  let hi = 0n;
  for (const k of windowsOf(a, d.windowNs)) {
    const k1 = k & MASK32;
    const age1 = (k1 - ws1) & MASK32; // how many windows the word is behind the clock
    if (age1 >= 1n << 31n) continue; // the word is ahead of this clock: not the clock it was read at
    const ahead = (ws2 - k1) & MASK32; // windows from the first reading's to the second's word
    if (ahead >= 1n << 31n) continue; // the second word is older than this window: not this clock
    const base = age1 === 0n ? c1 : 0n;
    let l: bigint;
    let h: bigint;
    if (ahead === 0n) {
      if (c2 < base) continue;
      l = h = c2 - base;
    } else {
      // The windows from k1 to before ws2 were not read at their end: each holds up to the limit.
      l = c2;
      h = c2 + (limit > base ? limit - base : 0n) + (ahead - 1n) * limit;
    }
    lo = lo === undefined || l < lo ? l : lo;
    hi = h > hi ? h : hi;
  }
  return lo === undefined ? null : { lo, hi };
}

/** Sliding window: as fixedPasses, with the previous window's count the word keeps. */
function slidingPasses(d: Derived, a: Reading, b: Reading): { lo: bigint; hi: bigint } | null {
  const limit = d.limit;
  const w = d.windowNs;
  // The 16-bit window numbers resolved against the latest window each reading may have been in.
  const full = (word: bigint, r: Reading): bigint => { const k = r.hi / w; return k - ((k - (word >> 48n)) & 0xffffn); };
  const ws1 = full(a.word, a);
  const cur1 = a.word & MASK24;
  const ws2 = full(b.word, b);
  const prev2 = (b.word >> 24n) & MASK24;
  const cur2 = b.word & MASK24;
  if (ws2 === ws1) {
    const prev1 = (a.word >> 24n) & MASK24;
    return cur2 >= cur1 && prev2 === prev1 ? { lo: cur2 - cur1, hi: cur2 - cur1 } : null;
  }
  let lo: bigint | undefined;
  let hi = 0n;
  for (const k1 of windowsOf(a, w)) {
    if (ws1 > k1 || ws2 < k1) continue;
    const base = ws1 === k1 ? cur1 : 0n;
    let l: bigint;
    let h: bigint;
    if (ws2 === k1) {
      if (cur2 < base) continue;
      l = h = cur2 - base;
    } else if (ws2 === k1 + 1n) {
      if (prev2 < base) continue;
      l = h = prev2 - base + cur2;
    } else {
      l = prev2 + cur2;
      h = l + (limit > base ? limit - base : 0n) + (ws2 - k1 - 2n) * limit;
    }
    lo = lo === undefined || l < lo ? l : lo;
    hi = h > hi ? h : hi;
  }
  return lo === undefined ? null : { lo, hi };
}

/**
 * Passes and drops of a key between two readings of its state, a before b, under its rule as it
 * was at both (ra, rb).
 */
export function between(ra: RateRule | undefined, rb: RateRule | undefined, a: Reading, b: Reading): Span {
  if (!ra || !rb) return unknown('no_rule');
  if (ra.scale !== rb.scale) return unknown('rule_changed');
  const r = rb;
  if (a.epoch !== b.epoch) return unknown('reinitialised');
  if (b.dropped < a.dropped) return unknown('evicted');
  const dropped = b.dropped - a.dropped;
  let p: { lo: bigint; hi: bigint } | null;
  if (a.epoch !== r.epoch) {
    // Written under an older epoch and not touched since (its next packet would re-initialise it).
    if (a.word !== b.word) return unknown('evicted');
    p = { lo: 0n, hi: 0n };
  } else if (a.blocked || b.blocked) {
    // While blocked, a key is not charged and its word holds the block's end: the same end at both
    // readings, nothing passed; else the word says nothing of the passes around the block.
    if (!(a.blocked && b.blocked && a.word === b.word)) return { ...unknown('block_changed'), dropped };
    p = { lo: 0n, hi: 0n };
  } else if (!r.d) {
    return { ...unknown('bytes_only'), dropped };
  } else if (r.alg === Alg.TOKEN || r.alg === Alg.GCRA) p = tatPasses(r.d, a, b);
  else if (r.alg === Alg.SLIDING) p = slidingPasses(r.d, a, b);
  else p = fixedPasses(r.d, a, b);
  if (!p) return unknown('evicted');
  const span: Span = { passedLo: Number(p.lo), passedHi: Number(p.hi), dropped };
  if (p.lo !== p.hi) span.bound = r.alg === Alg.TOKEN || r.alg === Alg.GCRA ? 'bucket_may_have_filled' : 'window_changed';
  if (a.dropped >= DROPS_SAT) span.bound = 'drops_saturated';
  else if (a.blocked || b.blocked) span.bound = 'blocked';
  else if (r.dryRun) span.bound = 'dry_run';
  return span;
}

/** Two spans one after the other. */
export function chain(x: Span, y: Span): Span {
  if (x.unknown) return x;
  if (y.unknown) return y;
  const s: Span = { passedLo: x.passedLo + y.passedLo, passedHi: x.passedHi + y.passedHi, dropped: x.dropped + y.dropped };
  const bound = x.bound ?? y.bound;
  if (bound) s.bound = bound;
  return s;
}

/** A key's rate over an interval, as top reports it (snake_case: the JSON of `top` and /v1/top). */
export interface Rate {
  /**
   * Packets per second decided for the key over the interval (passed + dropped), when known to
   * within 2% (or 2 packets); null otherwise (then pps_min and pps_max bound it, or rate_unknown
   * says why not even that).
   */
  pps: number | null;
  passed_pps: number | null;
  dropped_pps: number | null;
  /** Bounds of pps (null: unbounded above, or unknown). */
  pps_min: number | null;
  pps_max: number | null;
  /** Why pps is only bounded (null when it is known, or unknown). */
  rate_bound: RateBound | null;
  /** Why it is not known at all (null when known or bounded). */
  rate_unknown: RateUnknown | null;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;

/** Whether a range of passes is one figure: within 2 packets, or 2% of the larger bound. */
export const precise = (lo: number, hi: number): boolean => hi - lo <= Math.max(2, 0.02 * hi);

/** The rate of a span over `seconds`. */
export function rateOf(s: Span | undefined, seconds: number): Rate {
  if (!s) return rateOf(unknown('first_reading'), seconds);
  if (s.unknown || !(seconds > 0)) {
    const why = s.unknown ?? 'first_reading';
    const dropped = why === 'bytes_only' || why === 'per_rule' ? round1(s.dropped / seconds) : null;
    return { pps: null, passed_pps: null, dropped_pps: seconds > 0 ? dropped : null, pps_min: null, pps_max: null, rate_bound: null, rate_unknown: why };
  }
  const dropped = s.bound === 'drops_saturated' ? null : round1(s.dropped / seconds);
  // Blocked and dry-run keys decide packets the state does not count: what it counts is a floor.
  const open = s.bound === 'blocked' || s.bound === 'dry_run' || s.bound === 'drops_saturated';
  const lo = (s.passedLo + s.dropped) / seconds;
  const hi = (s.passedHi + s.dropped) / seconds;
  const exact = precise(s.passedLo, s.passedHi);
  const passed = exact ? round1((s.passedLo + s.passedHi) / 2 / seconds) : null;
  return {
    pps: exact && !open ? round1((s.passedLo + s.passedHi) / 2 / seconds + s.dropped / seconds) : null,
    passed_pps: passed,
    dropped_pps: dropped,
    pps_min: round1(lo),
    pps_max: open ? null : round1(hi),
    rate_bound: exact && !open ? null : s.bound ?? null,
    rate_unknown: null,
  };
}

// ---------------------------------------------------------------------------------------------
// Rates between walks of the state maps

/** A walk's kept entries as rates need them (src/limiter/top.ts, StateWalk). */
export interface WalkReadings {
  raw: { family: 4 | 6; k: Buffer; v: Buffer }[];
  t0: bigint;
  t1: bigint;
  readLo: bigint;
  readHi: bigint;
}

const K_RULE = 0;
const K_FLAGS = 3;

/** A state as read (struct sl_state, 16 bytes), at a time within [lo, hi]. */
export function readingOf(v: Buffer, lo: bigint, hi: bigint): Reading {
  const drops = v.readUInt32LE(8);
  return { word: v.readBigUInt64LE(0), dropped: drops >>> 2, blocked: (drops & 2) !== 0, epoch: v.readUInt16LE(12), lo, hi };
}

interface Held { r: Reading; rule: RateRule | undefined; perRule: boolean }

/** The interval of a set of rates: seconds, and its ends on CLOCK_MONOTONIC (ns). */
export interface RateInterval { seconds: number; from_ns: number; to_ns: number }

/**
 * Rates of each walk's entries against the walk before (the previous frame of `top --watch`, the
 * first reading of `top`, the API's last walk): a key the earlier walk did not keep has none
 * (first_reading). Holds only the last walk's kept entries.
 */
export class RateTracker {
  private held = new Map<string, Held>();
  private at: { t0: bigint; t1: bigint } | undefined;
  private rules = new Map<number, RateRule | undefined>();

  /** Rates of w's entries (in w.raw's order) since the walk given before; then w is the one held. */
  observe(w: WalkReadings, rules: Map<number, Rule>): { interval: RateInterval | null; rates: Rate[] } {
    const ruleOf = (id: number): RateRule | undefined => {
      if (!this.rules.has(id)) { const r = rules.get(id); this.rules.set(id, r ? rateRule(r) : undefined); }
      return this.rules.get(id);
    };
    const interval = this.at ? { seconds: Number(w.t0 + w.t1 - this.at.t0 - this.at.t1) / 2e9, from_ns: Number(this.at.t0 + this.at.t1) / 2, to_ns: Number(w.t0 + w.t1) / 2 } : null;
    const next = new Map<string, Held>();
    const rates = w.raw.map(({ family, k, v }) => {
      const id = `${family}:${k.toString('hex')}`;
      const held: Held = { r: readingOf(v, w.readLo, w.readHi), rule: ruleOf(k.readUInt16LE(K_RULE)), perRule: perRuleKey(k[K_FLAGS]!) };
      next.set(id, held);
      const before = this.held.get(id);
      if (!interval) return rateOf(undefined, 0);
      if (!before) return rateOf(undefined, interval.seconds);
      if (held.perRule) return rateOf({ ...unknown('per_rule'), dropped: Math.max(0, held.r.dropped - before.r.dropped) }, interval.seconds);
      return rateOf(between(before.rule, held.rule, before.r, held.r), interval.seconds);
    });
    this.held = next;
    this.at = { t0: w.t0, t1: w.t1 };
    // Each reading is judged under its rules as they were then: the next walk reads them afresh.
    this.rules = new Map();
    return { interval: interval && { seconds: +interval.seconds.toFixed(3), from_ns: interval.from_ns, to_ns: interval.to_ns }, rates };
  }
}

// ---------------------------------------------------------------------------------------------
// When to read

/** How `top` times its two readings (see alignReadings). */
export interface ReadingPlan {
  /** Wait this long before the first reading. */
  waitNs: bigint;
  /** Between the readings. */
  intervalNs: bigint;
  /** The rule the readings were fitted to, if any: its window, or its bucket's depth. */
  aligned: { rule: number; algorithm: 'fixed' | 'sliding' | 'token' | 'gcra'; window_ms: number | null; depth_ms: number | null } | null;
}

/**
 * Times for two readings `intervalNs` apart that make the rates of a rule's keys exact where the
 * word allows: for a fixed window both readings inside one window (so the interval is at most the
 * window less the margins), for a sliding window both away from a window change and at most one
 * change apart, for a token bucket or GCRA an interval shorter than the bucket's depth (a key over
 * its limit keeps a backlog of about that depth, which must outlast the interval). `margin` covers
 * the data path's clock lag and the readings' own time. The rule is the one most of the heaviest
 * keys (`ruleIds`, heaviest first) are under; keys of other rules may get bounds. A window or depth
 * shorter than four margins is not fitted to.
 */
export function alignReadings(rules: Map<number, Rule>, ruleIds: number[], intervalNs: bigint, nowNs: bigint, margin: bigint): ReadingPlan {
  const count = new Map<number, number>();
  for (const id of ruleIds) {
    const r = rules.get(id);
    if (r && !(r.flags & RuleFlags.NO_PKT_LIMIT)) count.set(id, (count.get(id) ?? 0) + 1);
  }
  const best = [...count].sort((a, b) => b[1] - a[1])[0];
  const plain: ReadingPlan = { waitNs: 0n, intervalNs, aligned: null };
  if (!best) return plain;
  const rule = rules.get(best[0])!;
  const rr = rateRule(rule);
  const alg = rr.alg;
  if (alg === Alg.TOKEN || alg === Alg.GCRA) {
    const d = rr.d!;
    const depth = (d.limit > d.inc1 ? d.limit - d.inc1 : 0n) >> d.shift;
    if (depth < 4n * margin) return plain;
    const aligned = { rule: rule.id, algorithm: alg === Alg.TOKEN ? 'token' as const : 'gcra' as const, window_ms: null, depth_ms: Math.round(Number(depth) / 1e6) };
    return { waitNs: 0n, intervalNs: intervalNs > depth - margin ? depth - margin : intervalNs, aligned };
  }
  const wms = Math.min(rule.window_ms || Defaults.WINDOW_MS, 3_600_000);
  const W = BigInt(wms) * 1_000_000n;
  if (W < 4n * margin) return plain;
  const aligned = { rule: rule.id, algorithm: alg === Alg.FIXED ? 'fixed' as const : 'sliding' as const, window_ms: wms, depth_ms: null };
  const ok = (p: bigint, i: bigint): boolean => {
    const q = (p + i) % W;
    return p >= margin && p <= W - margin && (alg === Alg.FIXED ? p + i <= W - margin : q >= margin && q <= W - margin && i < W);
  };
  const I = intervalNs > W - 2n * margin ? W - 2n * margin : intervalNs;
  const phase = nowNs % W;
  if (ok(phase, I)) return { waitNs: 0n, intervalNs: I, aligned };
  // Fixed: the next window's start plus the margin. Sliding: the first start from now (in steps of
  // a hundredth of the window) that keeps both readings clear of a change.
  if (alg === Alg.FIXED) return { waitNs: (margin - phase + W) % W, intervalNs: I, aligned };
  const step = W / 100n > 0n ? W / 100n : 1n;
  for (let wait = step; wait <= W; wait += step) if (ok((phase + wait) % W, I)) return { waitNs: wait, intervalNs: I, aligned };
  return plain;
}
