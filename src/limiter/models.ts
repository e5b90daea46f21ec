/**
 * Reference models of the four algorithms: the specification of what the kernel side must do,
 * with the same integer arithmetic (unsigned 64-bit, divisions rounding down unless said) as
 * bpf/limiters.h, including the derivation of each rule's values (sl_params_derive).
 * The differential test runs random traces through these and through the kernel (with the test
 * build's clock) and requires equal verdicts, packet by packet.
 */
import { Action, Alg, Defaults, RuleFlags } from '../generated/types';

const MASK32 = 0xffff_ffffn;
const MASK24 = 0xff_ffffn;
const U64 = (1n << 64n) - 1n;
const u64 = (x: bigint): bigint => x & U64;

/** limiters.h's constants. */
export const UNIT_QUANTA_BITS = 16n;
export const MAX_SHIFT = 24n;
export const MAX_COST = 1n << 20n;
export const TAT_SPAN = 1n << 62n;
export const MAX_WINDOW_MS = 3_600_000n;

export type AlgName = 'fixed' | 'sliding' | 'token' | 'gcra';
export const ALG_BY_NAME: Record<AlgName, number> = {
  fixed: Alg.FIXED, sliding: Alg.SLIDING, token: Alg.TOKEN, gcra: Alg.GCRA,
};

/** One dimension's limits with defaults resolved (struct sl_params before derivation). */
export interface Params {
  alg: number;
  /** Units per period. */
  rate: bigint;
  burst: bigint;
  windowMs: bigint;
  /** The rate's period: 1000, 60,000 or 3,600,000. */
  periodMs: bigint;
}

/** What sl_params_derive() computes from Params, once per rule. */
export interface Derived {
  /** token, gcra: time in quanta of 2^-shift ns. */
  shift: bigint;
  /** token, gcra: quanta a unit costs, ceil(period x 2^shift / rate). */
  inc1: bigint;
  /** fixed, sliding: units a window holds; token: depth in quanta; gcra: tau in quanta. */
  limit: bigint;
  /** token, gcra: the largest backlog a live key can have, quanta. */
  stale: bigint;
  windowNs: bigint;
}

/** The period of the packet or byte rate from a rule's flags (sl_period_ms). */
export function periodMsOf(flags: number, dim: 'pkt' | 'byt'): bigint {
  const [min, hour] = dim === 'pkt' ? [RuleFlags.PKT_PER_MIN, RuleFlags.PKT_PER_HOUR] : [RuleFlags.BYT_PER_MIN, RuleFlags.BYT_PER_HOUR];
  if (flags & hour) return 3_600_000n;
  if (flags & min) return 60_000n;
  return 1000n;
}

/** sl_params_derive(). */
export function derive(p: Params): Derived {
  const rate = p.rate || 1n;
  const pns = p.periodMs * 1_000_000n;
  const wms = p.windowMs > MAX_WINDOW_MS ? MAX_WINDOW_MS : p.windowMs;
  const windowNs = wms * 1_000_000n;
  if (p.alg === Alg.TOKEN || p.alg === Alg.GCRA) {
    let shift = 0n;
    while (shift < MAX_SHIFT && (pns << shift) < (rate << UNIT_QUANTA_BITS)) shift++;
    const inc1 = ((pns << shift) + rate - 1n) / rate;
    const units = p.alg === Alg.TOKEN ? p.burst : p.burst ? p.burst - 1n : 0n;
    const limit = units > TAT_SPAN / inc1 ? TAT_SPAN : units * inc1;
    return { shift, inc1, limit, stale: limit + inc1 * MAX_COST, windowNs };
  }
  const cap = p.alg === Alg.SLIDING ? MASK24 : MASK32;
  const w = wms || 1n;
  const q = rate / p.periodMs;
  const r = rate % p.periodMs;
  const b = q > cap / w ? cap : q * w + (r * w) / p.periodMs + p.burst;
  return { shift: 0n, inc1: 0n, limit: b > cap ? cap : b, stale: 0n, windowNs };
}

export interface StepResult { allow: boolean; charged: bigint; rolled: bigint }

export function fixed(word: bigint, now: bigint, cost: bigint, d: Derived): StepResult {
  const wid = (now / d.windowNs) & MASK32;
  const used = (word >> 32n) === wid ? word & MASK32 : 0n;
  const rolled = (wid << 32n) | used;
  if (used + cost > d.limit) return { allow: false, charged: rolled, rolled };
  return { allow: true, charged: (wid << 32n) | (used + cost), rolled };
}

/** The sliding window's estimate before a packet (rounded up) and the rolled word. */
export function slidingEstimate(word: bigint, now: bigint, d: Derived): { est: bigint; prev: bigint; cur: bigint; rolled: bigint } {
  const w = d.windowNs;
  const wid = now / w;
  const dw = (wid - (word >> 48n)) & 0xffffn;
  let prev = 0n;
  let cur = 0n;
  if (dw === 0n) {
    prev = (word >> 24n) & MASK24;
    cur = word & MASK24;
  } else if (dw === 1n) {
    prev = word & MASK24;
  }
  const elapsed = now - wid * w;
  const weight = (((w - elapsed) << 16n) + w - 1n) / w;
  const est = ((prev * weight + 0xffffn) >> 16n) + cur;
  return { est, prev, cur, rolled: ((wid & 0xffffn) << 48n) | (prev << 24n) | cur };
}

export function sliding(word: bigint, now: bigint, cost: bigint, d: Derived): StepResult {
  const { est, rolled } = slidingEstimate(word, now, d);
  if (est + cost > d.limit) return { allow: false, charged: rolled, rolled };
  return { allow: true, charged: rolled + cost, rolled };
}

/** A TAT word's backlog at nq (now in quanta); 0 for a full bucket (sl_backlog). */
export function backlog(word: bigint, nq: bigint, d: Derived): bigint {
  const b = u64(word - nq);
  return word !== 0n && b <= d.stale ? b : 0n;
}

const tatWord = (t: bigint): bigint => (u64(t) === 0n ? 1n : u64(t));
const costQuanta = (cost: bigint, d: Derived): bigint => (cost < MAX_COST ? cost : MAX_COST) * d.inc1;

export function token(word: bigint, now: bigint, cost: bigint, d: Derived): StepResult {
  const nq = u64(now << d.shift);
  const inc = costQuanta(cost, d);
  // A cost larger than the bucket fits a full one and leaves the rest as debt; debt is never forgiven.
  const need = inc < d.limit ? inc : d.limit;
  const back = backlog(word, nq, d);
  if (back + need > d.limit) return { allow: false, charged: word, rolled: word };
  return { allow: true, charged: tatWord(nq + back + inc), rolled: word };
}

export function gcra(word: bigint, now: bigint, cost: bigint, d: Derived): StepResult {
  const nq = u64(now << d.shift);
  const back = backlog(word, nq, d);
  if (back > d.limit) return { allow: false, charged: word, rolled: word };
  return { allow: true, charged: tatWord(nq + back + costQuanta(cost, d)), rolled: word };
}

export function step(word: bigint, cost: bigint, now: bigint, p: Params, d: Derived = derive(p)): StepResult {
  switch (p.alg) {
    case Alg.SLIDING: return sliding(word, now, cost, d);
    case Alg.TOKEN: return token(word, now, cost, d);
    case Alg.GCRA: return gcra(word, now, cost, d);
    default: return fixed(word, now, cost, d);
  }
}

/** The parts of a rule (struct sl_rule) that the limiter reads. Zero fields mean defaults. */
export interface RuleLimits {
  alg: number;
  action: number;
  flags: number;
  epoch: number;
  windowMs: number;
  blockMs: number;
  pktRate: bigint;
  pktBurst: bigint;
  bytRate: bigint;
  bytBurst: bigint;
}

export function resolveAlg(alg: number): number {
  return alg === Alg.DEFAULT || alg >= Alg.MAX ? Alg.FIXED : alg;
}

/** Resolve zero fields as sl_params_of() does. */
export function paramsOf(rate: bigint, burst: bigint, alg: number, windowMs: number, periodMs = 1000n): Params {
  const a = resolveAlg(alg);
  let b = burst;
  if (b === 0n && (a === Alg.TOKEN || a === Alg.GCRA)) b = rate;
  return { alg: a, rate, burst: b, windowMs: BigInt(windowMs || Defaults.WINDOW_MS), periodMs };
}

/** The parts of struct sl_rule that say how its keys' words are to be read. */
export interface RuleScale {
  alg: number;
  flags: number;
  window_ms: number;
  pkt: { rate: bigint; burst: bigint };
  byt: { rate: bigint; burst: bigint };
}

/**
 * What a key's words mean under a rule: its algorithm, window, each dimension's quanta, and whether
 * it has a packet limit (without one, the key's one word counts bytes: bpf/sluice.h, struct
 * sl_state). A rule whose scale changes gets a new epoch (its keys start afresh) instead of reading
 * old words with a new meaning; a change of rate or burst that keeps the scale keeps the state (and
 * its debt).
 */
export function scaleOf(r: RuleScale): string {
  const alg = resolveAlg(r.alg);
  const shift = (dim: 'pkt' | 'byt'): bigint => {
    const rate = dim === 'pkt' ? r.pkt.rate || BigInt(Defaults.PPS) : r.byt.rate;
    if (!rate || (alg !== Alg.TOKEN && alg !== Alg.GCRA)) return 0n;
    return derive(paramsOf(rate, r[dim].burst, alg, r.window_ms, periodMsOf(r.flags, dim))).shift;
  };
  return `${alg}|${r.window_ms}|${shift('pkt')}|${shift('byt')}|${r.flags & RuleFlags.NO_PKT_LIMIT ? 'bytes' : 'packets'}`;
}

interface KeyState { pkt: bigint; byt: bigint; lastSeen: bigint; blockedUntil: bigint; epoch: number; alg: number; dropped: bigint }

export type ModelVerdict = 'pass' | 'drop' | 'dryrun' | 'blocked';

/**
 * A rule's limiter over many keys, as sl_enforce() runs it on one CPU: state per key, created
 * zeroed on first sight, re-initialised on an algorithm or epoch change, both dimensions charged
 * only when both allow, block and dry-run actions.
 */
export class RuleModel {
  private readonly states = new Map<string, KeyState>();

  constructor(public rule: RuleLimits) {}

  packet(key: string, now: bigint, len: number): ModelVerdict {
    const r = this.rule;
    const alg = resolveAlg(r.alg);
    let st = this.states.get(key);
    if (!st) {
      st = { pkt: 0n, byt: 0n, lastSeen: 0n, blockedUntil: 0n, epoch: r.epoch, alg, dropped: 0n };
      this.states.set(key, st);
    }
    if (st.epoch !== r.epoch || st.alg !== alg) {
      st.pkt = 0n;
      st.byt = 0n;
      st.epoch = r.epoch;
      st.alg = alg;
    }
    st.lastSeen = now;
    if (st.blockedUntil > now) return 'blocked';

    const hasP = (r.flags & RuleFlags.NO_PKT_LIMIT) === 0;
    const hasB = r.bytRate !== 0n;
    const pps = r.pktRate !== 0n ? r.pktRate : BigInt(Defaults.PPS);
    let allow = true;
    let ps: StepResult | undefined;
    let bs: StepResult | undefined;
    if (hasP) {
      ps = step(st.pkt, 1n, now, paramsOf(pps, r.pktBurst, alg, r.windowMs, periodMsOf(r.flags, 'pkt')));
      allow &&= ps.allow;
    }
    if (hasB) {
      bs = step(st.byt, BigInt(len), now, paramsOf(r.bytRate, r.bytBurst, alg, r.windowMs, periodMsOf(r.flags, 'byt')));
      allow &&= bs.allow;
    }
    if (ps) st.pkt = allow ? ps.charged : ps.rolled;
    if (bs) st.byt = allow ? bs.charged : bs.rolled;
    if (allow) return 'pass';
    if (r.action === Action.DRYRUN) return 'dryrun';
    st.dropped += 1n;
    if (r.action === Action.BLOCK) st.blockedUntil = now + BigInt(r.blockMs) * 1_000_000n;
    return 'drop';
  }

  state(key: string): Readonly<KeyState> | undefined {
    return this.states.get(key);
  }
}
