/**
 * Limits as the config file, the policy file and the API give them, over a base (the defaults, or
 * what is in force): merged, checked, and turned into the default rule.
 */
import { DEFAULT_LIMITS, defaultRuleOf, FULL_FRAME_BYTES, type Limits } from '../limiter/rule';
import { compilePolicy, PolicyError } from '../limiter/policy';
import type { LimitsInput } from './schema';

/** Limits from the file or the API over a base (the defaults, or what is in force). */
/** A period field, left out when it is the default (a second). */
function periodOf<K extends 'ratePeriodMs' | 'bytesPeriodMs'>(k: K, ms: number | undefined): Partial<Record<K, number>> {
  return ms !== undefined && ms !== 1000 ? ({ [k]: ms } as Partial<Record<K, number>>) : {};
}

// The default rule of a set of limits, and its scope fields: the rule model's (src/limiter/rule.ts).
export { defaultRuleOf, ruleScopeOf } from '../limiter/rule';

/**
 * The window when none is given: a rate per minute or hour brings its period as the window, and
 * such a window goes with its rate (a rule that sets a rate per second does not inherit the
 * defaults' hour); otherwise the base's.
 */
function windowOf(base: Limits, l: LimitsInput): number {
  if (l.rate === undefined && l.bytes_rate === undefined) return base.windowMs;
  const period = Math.max(l.rate?.periodMs ?? 0, l.bytes_rate?.periodMs ?? 0);
  if (period > 1000) return period;
  const derived = base.windowMs > 1000 && (base.windowMs === base.ratePeriodMs || base.windowMs === base.bytesPeriodMs);
  return derived ? DEFAULT_LIMITS.windowMs : base.windowMs;
}

export function mergeLimits(base: Limits, l: LimitsInput | undefined): Limits {
  if (!l) return { ...base };
  return {
    algorithm: l.algorithm ?? base.algorithm,
    rate: l.rate !== undefined ? (l.rate?.units ?? null) : base.rate,
    ...periodOf('ratePeriodMs', l.rate !== undefined ? l.rate?.periodMs : base.ratePeriodMs),
    burst: l.burst ?? base.burst,
    bytesRate: l.bytes_rate !== undefined ? (l.bytes_rate?.units ?? null) : base.bytesRate,
    ...periodOf('bytesPeriodMs', l.bytes_rate !== undefined ? l.bytes_rate?.periodMs : base.bytesPeriodMs),
    bytesBurst: l.bytes_burst ?? base.bytesBurst,
    windowMs: l.window ?? windowOf(base, l),
    keyV4: l.key?.v4 ?? base.keyV4,
    keyV6: l.key?.v6 ?? base.keyV6,
    ...scopeOf(base, l),
  };
}

/**
 * scope and local: a rule's own scope, else the base's; local goes with its scope and its rate (a
 * rule that sets its own rate does not inherit the defaults' fallback). A local rate per another
 * period than the rate's is kept as it is said and refused by the compiler.
 */
function scopeOf(base: Limits, l: LimitsInput): Pick<Limits, 'scope' | 'localRate'> & { localPeriodMs?: number } {
  const scope = l.scope !== undefined ? l.scope : base.scope === 'global' ? 'global' : 'node';
  // Kept, so that the compiler says what is wrong with a fallback for a rule that is not global.
  if (scope !== 'global') return l.local !== undefined ? { localRate: l.local.units } : {};
  const period = l.rate !== undefined ? (l.rate?.periodMs ?? 1000) : (base.ratePeriodMs ?? 1000);
  if (l.local !== undefined) {
    return { scope: 'global', localRate: l.local.periodMs === period ? l.local.units : Math.max(1, Math.floor(l.local.units * period / l.local.periodMs)) };
  }
  if (l.rate === undefined && l.scope === undefined && base.localRate !== undefined) return { scope: 'global', localRate: base.localRate };
  return { scope: 'global' };
}

/**
 * What is wrong with a whole set of limits, across fields: [key under `limits`, message]. The same
 * checks the data path's policy compiler makes, said in the file's terms.
 */
export function limitsProblems(l: Limits): [string, string][] {
  const out: [string, string][] = [];
  if (l.rate === null && l.bytesRate === null) out.push(['rate', 'no packet limit (rate: none) needs a byte limit (bytes_rate)']);
  if ((l.algorithm === 'token' || l.algorithm === 'gcra') && l.bytesRate !== null && l.bytesBurst > 0 && l.bytesBurst < FULL_FRAME_BYTES) {
    out.push(['bytes_burst', `${l.bytesBurst} is smaller than one full-size frame (${FULL_FRAME_BYTES} bytes): such packets could never pass with ${l.algorithm}`]);
  }
  if (out.length) return out;
  const rule = defaultRuleOf(l);
  try {
    compilePolicy({ rules: [rule] }, 2);
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    for (const p of e.problems) out.push(['', p.replace(/^rules\[0\] \(default\): /, '')]);
  }
  return out;
}
