/**
 * Reports of a protection, shared by the command line and the HTTP API: statistics (totals since
 * attach, per rule and reason, rates between two snapshots) and status (how it is attached, what it
 * enforces, how full its state map is).
 */
import { dropRate, rates, snapshot, type Rates, type RuleStats, type SlotStats, type Snapshot } from '../limiter/stats';
import { readStates, SHARED_TOP, sharedWalk, walkStates, type StateEntry, type StateWalk } from '../limiter/top';
import { RateTracker, type Rate, type RateInterval } from '../limiter/rates';
import type { BpfMap } from '../ebpf';
import type { Rule } from '../generated/types';
import { listPlaces, type Limits, type Mode } from './state';
import { AgentCode } from './errors';
import { Protection } from './protection';
import { summarizePending, type PendingSummary } from './pending';
import { eventBudget } from './events';

export interface StatsReport extends SlotStats {
  iface: string;
  netns: string | null;
  drop_rate: number;
  rates: Rates | null;
  global: SlotStats;
  rules: RuleStats[];
}

export function takeSnapshot(p: Protection): Snapshot {
  return snapshot(p.limiter, p.ruleNames());
}

export function statsReport(p: Protection, cur: Snapshot, prev?: Snapshot): StatsReport {
  return {
    iface: p.settings.iface,
    netns: p.settings.netns,
    ...cur.totals,
    drop_rate: +dropRate(cur.totals).toFixed(4),
    rates: prev ? rates(prev, cur) : null,
    global: cur.global,
    rules: cur.rules,
  };
}

export interface StatusReport {
  iface: string;
  netns: string | null;
  ifindex: number;
  mode: Mode;
  attached_by: 'link';
  program_id: number;
  program_tag: string;
  policy_version: number;
  limits: Limits;
  rules: number;
  lists: { mgmt: number; deny: number; allow: number };
  state_entries: number;
  state_max_entries: number;
  /** Insertions minus entries present: the evictions (and expiries) so far, at least. */
  evictions: number;
  attached_at: string;
  /** A change applied with --confirm-within that is not confirmed yet, or whose rollback failed. */
  rollback: PendingSummary | null;
}

/**
 * Count the entries of the state map: one walk of batch lookups that yields between batches,
 * shared with concurrent /v1/top requests and metric scrapes of the same map.
 */
export async function countStates(p: Protection): Promise<number> {
  return (await sharedWalk(p.limiter.maps, () => liveRules(p))).entries;
}

/** Limits as every JSON output writes them (CLI --json, the HTTP API, the logs): snake_case, as the config file does. */
export interface LimitsJson {
  /** Present for a global limit (docs/fleet.md): rate is the fleet's, local_rate this node's without it. */
  scope?: 'global';
  local_rate?: number | null;
  algorithm: Limits['algorithm'];
  rate: number | null;
  rate_period_ms: number;
  burst: number;
  bytes_rate: number | null;
  bytes_period_ms: number;
  bytes_burst: number;
  window_ms: number;
  key_v4: number;
  key_v6: number;
}

export function limitsJson(l: Limits): LimitsJson {
  return {
    algorithm: l.algorithm, rate: l.rate, rate_period_ms: l.ratePeriodMs ?? 1000, burst: l.burst,
    bytes_rate: l.bytesRate, bytes_period_ms: l.bytesPeriodMs ?? 1000, bytes_burst: l.bytesBurst,
    window_ms: l.windowMs, key_v4: l.keyV4, key_v6: l.keyV6,
    ...(l.scope === 'global' ? { scope: 'global' as const, local_rate: l.localRate ?? l.rate } : {}),
  };
}

/** A status report as JSON (`sluice status --json`, GET /v1/status): every key snake_case. */
export function statusJson(r: StatusReport): Omit<StatusReport, 'limits'> & { limits: LimitsJson } {
  return { ...r, limits: limitsJson(r.limits) };
}

export async function statusReport(p: Protection): Promise<StatusReport> {
  const s = p.settings;
  const prog = p.programInfo();
  const entries = await countStates(p);
  const snap = takeSnapshot(p);
  return {
    iface: s.iface,
    netns: s.netns,
    ifindex: s.ifindex,
    mode: s.mode,
    attached_by: 'link',
    program_id: prog.id,
    program_tag: prog.tag,
    policy_version: p.limiter.version(),
    limits: s.limits,
    rules: 1 + s.rules.length,
    lists: { mgmt: s.lists.mgmt.length, deny: s.lists.deny.length, allow: s.lists.allow.length },
    state_entries: entries,
    state_max_entries: p.limiter.maps.rate_limit_map.maxEntries,
    evictions: Math.max(0, snap.totals.new_states - entries),
    attached_at: s.attachedAt,
    rollback: summarizePending(p.place),
  };
}

/** Every protected interface (pins present), opened; the caller closes them. */
/**
 * Every protected interface, opened. One that is not protected when it is opened (taken down by
 * another process between the listing and its opening: `sluice down`, a test run's cleanup) is left
 * out, not an error for all.
 */
export function openAll(): Protection[] {
  const out: Protection[] = [];
  try {
    for (const pl of listPlaces()) {
      try {
        out.push(Protection.open(pl));
      } catch (e) {
        if ((e as { code?: string }).code === AgentCode.NotProtected) continue;
        throw e;
      }
    }
    return out;
  } catch (e) {
    out.forEach((p) => p.close());
    throw e;
  }
}

/** The live rules by id (for decoding state). */
export function liveRules(p: Protection): Map<number, Rule> {
  const v = p.limiter.version();
  return new Map(p.limiter.rulesOf(v & 1).filter((r) => r.version === v).map((r) => [r.id, r]));
}

/** A source as top reports it: its state, and its rate over the report's interval. */
export type TopEntry = StateEntry & Rate;

/** The heaviest sources, and the interval their rates are over (null: a first reading). */
export interface TopReport {
  rate: RateInterval | null;
  top: TopEntry[];
}

/** Each entry of a walk with its rate (the tracker observed the walk before it). */
export function withRates(w: StateWalk, t: RateTracker, n = w.top.length): TopReport {
  const { interval, rates } = t.observe(w, w.rules);
  return { rate: interval, top: w.top.slice(0, n).map((e, i) => ({ ...e, ...rates[i]! })) };
}

/** Recent walks per state map, for the rates of the next: the newest at least RATE_MIN_NS older, and those after it. */
const recent = new WeakMap<BpfMap, StateWalk[]>();
const RATE_MIN_NS = 500_000_000n;

/**
 * The n heaviest entries, from one streaming walk with a bounded heap. Up to SHARED_TOP, the walk
 * is shared with whoever else reads this map meanwhile (see sharedWalk). Their rates are over the
 * time since an earlier walk of the same maps (the newest at least 0.5 s before: the API's previous
 * request, the metrics' last count): cheap, two sets of at most SHARED_TOP states. The first walk
 * has none (rate null, each entry's rate_unknown first_reading).
 */
export async function topReport(p: Protection, n: number): Promise<TopReport> {
  const maps = p.limiter.maps;
  const w = n <= SHARED_TOP ? await sharedWalk(maps, () => liveRules(p)) : await walkStates(maps, liveRules(p), n);
  const walks = recent.get(maps.rate_limit_map) ?? [];
  if (!walks.includes(w)) walks.push(w);
  const base = walks.filter((x) => w.t0 - x.t1 >= RATE_MIN_NS).pop();
  recent.set(maps.rate_limit_map, base ? walks.slice(walks.indexOf(base)) : walks);
  const t = new RateTracker();
  if (base) t.observe(base, base.rules);
  return withRates(w, t, n);
}

export async function dumpReport(p: Protection): Promise<StateEntry[]> {
  return readStates(p.limiter.maps, liveRules(p));
}

/**
 * What the API's metrics read of a protection (src/api/metrics.ts, ProtectionReader, implemented
 * here so that the API imports no agent module): the counters, the policy version, the state map's
 * size and entries (one walk shared with /v1/top and /v1/status), the events not emitted.
 */
export function metricsReader(p: Protection) {
  return {
    snapshot: () => takeSnapshot(p),
    version: () => p.limiter.version(),
    get maxEntries() { return p.limiter.maps.rate_limit_map.maxEntries; },
    countEntries: async () => (await sharedWalk(p.limiter.maps, () => liveRules(p))).entries,
    eventBudget: () => eventBudget(p),
  };
}
