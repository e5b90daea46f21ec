/**
 * The daemon's history of an interface (GET /v1/history, docs/api.md): one point a second, the
 * last 15 minutes, so that a console opened in the middle of an incident shows its start at once.
 * Each point is the counters' change over the second before it (two snapshots of the per-CPU
 * counters, the very readings that GET /v1/stats gives as `rates`): passed and dropped packets and
 * bytes per second, packets per second by drop reason, per rule, new states per second, and the
 * state map's fill (its entry count, which takes a walk of the map: counted as often as its cost
 * allows, the last count carried forward meanwhile).
 *
 * Memory: a ring of CAPACITY points per interface, each a few numbers per reason and rule seen.
 */
import { rates, type Rates, type Snapshot } from '../limiter/stats';

/** Points kept: 15 minutes at one a second. */
export const HISTORY_CAPACITY = 900;
export const HISTORY_INTERVAL_MS = 1000;

export interface HistoryPoint {
  /** Wall time of the second reading, ms since the epoch. */
  t: number;
  rates: Rates;
  /** Packets per second by reason (only reasons that counted in that second). */
  reasons: Record<string, number>;
  /** Per rule id: passed and dropped packets per second. */
  rules: Map<number, { allowed_pps: number; dropped_pps: number }>;
  state_entries: number | null;
  state_max_entries: number;
}

/** The history as the API answers it: one array per series, index i of each is point i (what a chart takes). */
export interface HistoryJson {
  interval_ms: number;
  capacity: number;
  /** ms since the epoch, the end of each point's interval. */
  t: number[];
  seconds: number[];
  allowed_pps: number[];
  dropped_pps: number[];
  allowed_bps: number[];
  dropped_bps: number[];
  new_states_per_sec: number[];
  /** Packets per second by reason; 0 where a reason did not count. */
  reasons: Record<string, number[]>;
  rules: { id: number; name: string | null; allowed_pps: number[]; dropped_pps: number[] }[];
  /** null before the first count of the map. */
  state_entries: (number | null)[];
  state_max_entries: number[];
}

const round = (x: number): number => Math.round(x * 100) / 100;

export class History {
  private readonly points: HistoryPoint[] = [];
  private readonly names = new Map<number, string | null>();

  constructor(readonly capacity = HISTORY_CAPACITY) {}

  /** The point between two snapshots (prev earlier), appended; the oldest goes past capacity. */
  push(prev: Snapshot, cur: Snapshot, state: { entries: number | null; max: number }, wallMs = Date.now()): HistoryPoint {
    const s = Number(cur.at_ns - prev.at_ns) / 1e9;
    const per = (a: number, b: number): number => (s > 0 ? Math.max(0, (b - a) / s) : 0);
    const reasons: Record<string, number> = {};
    for (const [k, v] of Object.entries(cur.totals.reasons)) {
      const r = per(prev.totals.reasons[k]?.packets ?? 0, v.packets);
      if (r > 0) reasons[k] = round(r);
    }
    const before = new Map(prev.rules.map((r) => [r.id, r]));
    const rules = new Map<number, { allowed_pps: number; dropped_pps: number }>();
    for (const r of cur.rules) {
      this.names.set(r.id, r.name ?? null);
      const b = before.get(r.id);
      rules.set(r.id, { allowed_pps: round(per(b?.allowed_packets ?? r.allowed_packets, r.allowed_packets)), dropped_pps: round(per(b?.dropped_packets ?? r.dropped_packets, r.dropped_packets)) });
    }
    const p: HistoryPoint = { t: wallMs, rates: rates(prev, cur), reasons, rules, state_entries: state.entries, state_max_entries: state.max };
    this.points.push(p);
    if (this.points.length > this.capacity) this.points.splice(0, this.points.length - this.capacity);
    return p;
  }

  last(): HistoryPoint | undefined {
    return this.points[this.points.length - 1];
  }

  get length(): number {
    return this.points.length;
  }

  /** Points after `sinceMs` (all without it), as columns. */
  json(sinceMs?: number): HistoryJson {
    const pts = sinceMs === undefined ? this.points : this.points.filter((p) => p.t > sinceMs);
    const reasonNames = new Set<string>();
    const ruleIds = new Set<number>();
    for (const p of pts) {
      Object.keys(p.reasons).forEach((k) => reasonNames.add(k));
      p.rules.forEach((_, id) => ruleIds.add(id));
    }
    const col = (f: (p: HistoryPoint) => number): number[] => pts.map((p) => round(f(p)));
    return {
      interval_ms: HISTORY_INTERVAL_MS,
      capacity: this.capacity,
      t: pts.map((p) => p.t),
      seconds: pts.map((p) => +p.rates.seconds.toFixed(3)),
      allowed_pps: col((p) => p.rates.allowed_pps),
      dropped_pps: col((p) => p.rates.dropped_pps),
      allowed_bps: col((p) => p.rates.allowed_bps),
      dropped_bps: col((p) => p.rates.dropped_bps),
      new_states_per_sec: col((p) => p.rates.new_states_per_sec),
      reasons: Object.fromEntries([...reasonNames].sort().map((k) => [k, pts.map((p) => p.reasons[k] ?? 0)])),
      rules: [...ruleIds].sort((a, b) => a - b).map((id) => ({
        id, name: this.names.get(id) ?? null,
        allowed_pps: pts.map((p) => p.rules.get(id)?.allowed_pps ?? 0),
        dropped_pps: pts.map((p) => p.rules.get(id)?.dropped_pps ?? 0),
      })),
      state_entries: pts.map((p) => p.state_entries),
      state_max_entries: pts.map((p) => p.state_max_entries),
    };
  }
}
