/**
 * The rule model from the configuration to the kernel's rule: Limits (one rule's limits as the
 * command line, the config file, the policy file and the API set them, and as the settings file
 * keeps them), the default rule they make (a RuleSpec, which compilePolicy turns into the
 * generated sl_rule), and the bounds and defaults both sides share, taken from the generated
 * types where bpf/sluice.h states them and stated once (./bounds.ts) where it does not.
 *
 * config -> limiter and agent -> limiter are allowed edges: the config's schema produces Limits,
 * the agent and the policy compiler consume them.
 */
import { Defaults } from '../generated/types';
import type { AlgName } from './models';
import type { GeoConfig } from './geoip';
import type { Lists } from './lists';
import type { RuleSpec } from './policy';

export { FULL_FRAME_BYTES, MAX_RATE } from './bounds';

/** The default rule as the command line sets it. */
export interface Limits {
  algorithm: AlgName;
  /** Packets per period (a second unless ratePeriodMs says otherwise); null: no packet limit. */
  rate: number | null;
  /** The period of rate: 1000 (absent), 60,000 or 3,600,000 ms ("3/min" is rate 3, 60,000). */
  ratePeriodMs?: number;
  burst: number;
  bytesRate: number | null;
  /** The period of bytesRate, as ratePeriodMs. */
  bytesPeriodMs?: number;
  bytesBurst: number;
  windowMs: number;
  keyV4: number;
  keyV6: number;
  /** 'global': rate is one limit for the whole fleet (docs/fleet.md); absent: for this node. */
  scope?: 'global';
  /** With scope global: this node's limit while the fleet cannot be reached, per ratePeriodMs; absent: rate. */
  localRate?: number;
}

/**
 * The limits of a rule that says nothing: the data path's own defaults (bpf/sluice.h, sl_defaults)
 * for the rate, window and key lengths; fixed window (what algorithm 0 runs); bursts 0 (the
 * algorithm's default); no byte limit.
 */
export const DEFAULT_LIMITS: Limits = {
  algorithm: 'fixed', rate: Defaults.PPS, burst: 0, bytesRate: null, bytesBurst: 0,
  windowMs: Defaults.WINDOW_MS, keyV4: Defaults.KEY_V4, keyV6: Defaults.KEY_V6,
};


/** The scope fields of a RuleSpec for limits l. */
export function ruleScopeOf(l: Limits): Pick<RuleSpec, 'scope' | 'localPps'> {
  return { ...(l.scope === 'global' ? { scope: 'global' as const } : {}), ...(l.localRate !== undefined ? { localPps: l.localRate } : {}) };
}

/** The default rule (id 0) of a set of limits, as the policy compiler takes it. */
export function defaultRuleOf(l: Limits): RuleSpec {
  return {
    id: 0, name: 'default', alg: l.algorithm, pps: l.rate, ppsBurst: l.burst, windowMs: l.windowMs, key: { v4: l.keyV4, v6: l.keyV6 },
    ...ruleScopeOf(l),
    ...(l.ratePeriodMs !== undefined ? { ppsPeriodMs: l.ratePeriodMs } : {}),
    ...(l.bytesRate !== null
      ? { bps: l.bytesRate, bpsBurst: l.bytesBurst, ...(l.bytesPeriodMs !== undefined ? { bpsPeriodMs: l.bytesPeriodMs } : {}) }
      : {}),
  };
}

/** A whole policy as the settings keep it and a policy file gives it: the default rule's limits, the rules after it, lists and switches. */
export interface PolicyContent {
  /** The default rule. */
  limits: Limits;
  /** Rules after the default one. */
  rules: RuleSpec[];
  lists: Lists;
  malformedDrop: boolean;
  /** Also enforce at tc clsact egress (rules with dir egress or both). */
  egress: boolean;
  /** GeoIP tiers, or null for none. */
  geoip: GeoConfig | null;
  /** Rule name -> stable id (a rule keeps its counters and state while its name stays). */
  ruleIds: Record<string, number>;
}
