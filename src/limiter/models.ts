/**
 * Reference models of the four algorithms: the specification of what the kernel side must do,
 * with the same integer arithmetic (unsigned 64-bit, divisions rounding down) as bpf/limiters.h.
 * The differential test runs random traces through these and through the kernel (with the test
 * build's clock) and requires equal verdicts, packet by packet.
 */
import { Action, Alg, Defaults, RuleFlags } from '../generated/types';

const NSEC = 1_000_000_000n;
const MASK32 = 0xffff_ffffn;
const MASK30 = 0x3fff_ffffn;
const U64 = (1n << 64n) - 1n;
const u64 = (x: bigint): bigint => x & U64;

export type AlgName = 'fixed' | 'sliding' | 'token' | 'gcra';
export const ALG_BY_NAME: Record<AlgName, number> = {
  fixed: Alg.FIXED, sliding: Alg.SLIDING, token: Alg.TOKEN, gcra: Alg.GCRA,
};

/** One dimension's limits with defaults resolved (struct sl_params). */
export interface Params {
  alg: number;
  rate: bigint;
  burst: bigint;
  windowMs: bigint;
}

export interface StepResult { allow: boolean; charged: bigint; rolled: bigint }

function windowBudget(p: Params, cap: bigint): bigint {
  const b = u64(u64(p.rate * p.windowMs) / 1000n + p.burst);
  return b > cap ? cap : b;
}

export function fixed(word: bigint, now: bigint, cost: bigint, p: Params): StepResult {
  const wns = p.windowMs * 1_000_000n;
  const wid = (now / wns) & MASK32;
  const used = (word >> 32n) === wid ? word & MASK32 : 0n;
  const rolled = (wid << 32n) | used;
  if (used + cost > windowBudget(p, MASK32)) return { allow: false, charged: rolled, rolled };
  return { allow: true, charged: (wid << 32n) | (used + cost), rolled };
}

export function sliding(word: bigint, now: bigint, lastSeen: bigint, cost: bigint, p: Params): StepResult {
  const w = p.windowMs * 1_000_000n;
  const wid = now / w;
  let prev = 0n;
  let cur = 0n;
  if (u64(lastSeen + 2n * w) > now) {
    const d = (wid - (word >> 60n)) & 15n;
    if (d === 0n) {
      prev = (word >> 30n) & MASK30;
      cur = word & MASK30;
    } else if (d === 1n) {
      prev = word & MASK30;
    }
  }
  const elapsed = now - wid * w;
  const weight = ((w - elapsed) << 16n) / w;
  const est = ((prev * weight) >> 16n) + cur;
  const rolled = ((wid & 15n) << 60n) | (prev << 30n) | cur;
  if (est + cost > windowBudget(p, MASK30)) return { allow: false, charged: rolled, rolled };
  return { allow: true, charged: ((wid & 15n) << 60n) | (prev << 30n) | (cur + cost), rolled };
}

export function token(word: bigint, now: bigint, cost: bigint, p: Params): StepResult {
  const cap = u64(p.burst * NSEC + p.rate - 1n) / p.rate;
  const inc = u64(cost * NSEC + p.rate - 1n) / p.rate;
  // A cost larger than the bucket fits a full one and leaves the rest as debt; debt is never forgiven.
  const need = inc < cap ? inc : cap;
  const t = word > now ? word : now;
  if (u64(t + need - now) > cap) return { allow: false, charged: word, rolled: word };
  return { allow: true, charged: u64(t + inc), rolled: word };
}

export function gcra(word: bigint, now: bigint, cost: bigint, p: Params): StepResult {
  const tau = u64((p.burst - 1n) * NSEC) / p.rate;
  const inc = u64(cost * NSEC) / p.rate;
  const t = word > now ? word : now;
  if (t - now > tau) return { allow: false, charged: word, rolled: word };
  return { allow: true, charged: u64(t + inc), rolled: word };
}

export function step(word: bigint, cost: bigint, now: bigint, lastSeen: bigint, p: Params): StepResult {
  switch (p.alg) {
    case Alg.SLIDING: return sliding(word, now, lastSeen, cost, p);
    case Alg.TOKEN: return token(word, now, cost, p);
    case Alg.GCRA: return gcra(word, now, cost, p);
    default: return fixed(word, now, cost, p);
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
export function paramsOf(rate: bigint, burst: bigint, alg: number, windowMs: number): Params {
  const a = resolveAlg(alg);
  let b = burst;
  if (b === 0n && (a === Alg.TOKEN || a === Alg.GCRA)) b = rate;
  return { alg: a, rate, burst: b, windowMs: BigInt(windowMs || Defaults.WINDOW_MS) };
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
    const last = st.lastSeen;
    st.lastSeen = now;
    if (st.blockedUntil > now) return 'blocked';

    const hasP = (r.flags & RuleFlags.NO_PKT_LIMIT) === 0;
    const hasB = r.bytRate !== 0n;
    const pps = r.pktRate !== 0n ? r.pktRate : BigInt(Defaults.PPS);
    let allow = true;
    let ps: StepResult | undefined;
    let bs: StepResult | undefined;
    if (hasP) {
      ps = step(st.pkt, 1n, now, last, paramsOf(pps, r.pktBurst, alg, r.windowMs));
      allow &&= ps.allow;
    }
    if (hasB) {
      bs = step(st.byt, BigInt(len), now, last, paramsOf(r.bytRate, r.bytBurst, alg, r.windowMs));
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
