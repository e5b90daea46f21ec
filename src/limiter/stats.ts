/**
 * Reading the counters: totals since attach, per rule and per reason, and rates between two
 * snapshots. Counters are per-CPU in the kernel; the Limiter sums them.
 */
import { Reason, type Counters } from '../generated/types';
import type { Limiter } from './limiter';

export const REASON_NAMES: string[] = (() => {
  const names: string[] = [];
  for (const [k, v] of Object.entries(Reason)) if (k !== 'MAX') names[v] = k.toLowerCase();
  return names;
})();

export interface Totals {
  allowed_packets: number;
  dropped_packets: number;
  allowed_bytes: number;
  dropped_bytes: number;
}

export interface SlotStats extends Totals {
  /** Packets and bytes by reason name (only reasons that counted anything). */
  reasons: Record<string, { packets: number; bytes: number }>;
  new_states: number;
}

export interface RuleStats extends SlotStats {
  id: number;
  name?: string;
}

export interface Snapshot {
  /** CLOCK_MONOTONIC, ns: the data path's clock. */
  at_ns: bigint;
  totals: SlotStats;
  global: SlotStats;
  rules: RuleStats[];
}

function slot(c: Counters): SlotStats {
  const reasons: SlotStats['reasons'] = {};
  c.reason_packets.forEach((p, r) => {
    if (p > 0n && REASON_NAMES[r]) reasons[REASON_NAMES[r]!] = { packets: Number(p), bytes: Number(c.reason_bytes[r]) };
  });
  return {
    allowed_packets: Number(c.packets[0]),
    dropped_packets: Number(c.packets[1]),
    allowed_bytes: Number(c.bytes[0]),
    dropped_bytes: Number(c.bytes[1]),
    reasons,
    new_states: Number(c.new_states),
  };
}

function add(a: SlotStats, b: SlotStats): SlotStats {
  const reasons = { ...a.reasons };
  for (const [k, v] of Object.entries(b.reasons)) {
    const r = reasons[k] ?? { packets: 0, bytes: 0 };
    reasons[k] = { packets: r.packets + v.packets, bytes: r.bytes + v.bytes };
  }
  return {
    allowed_packets: a.allowed_packets + b.allowed_packets,
    dropped_packets: a.dropped_packets + b.dropped_packets,
    allowed_bytes: a.allowed_bytes + b.allowed_bytes,
    dropped_bytes: a.dropped_bytes + b.dropped_bytes,
    reasons,
    new_states: a.new_states + b.new_states,
  };
}

/** Counters of the global slot and of the given rules (id -> name), and their totals. */
export function snapshot(limiter: Limiter, rules: Map<number, string | undefined>): Snapshot {
  const global = slot(limiter.globalCounters());
  const perRule: RuleStats[] = [...rules].map(([id, name]) => ({ id, ...(name ? { name } : {}), ...slot(limiter.counters(id)) }));
  const totals = perRule.reduce<SlotStats>((t, r) => add(t, r), global);
  return { at_ns: process.hrtime.bigint(), totals, global, rules: perRule };
}

export interface Rates {
  seconds: number;
  allowed_pps: number;
  dropped_pps: number;
  allowed_bps: number;
  dropped_bps: number;
  new_states_per_sec: number;
  /** Dropped of decided packets between the two readings (0 when none were decided). */
  drop_rate: number;
}

export function rates(prev: Snapshot, cur: Snapshot): Rates {
  const s = Number(cur.at_ns - prev.at_ns) / 1e9;
  const r = (a: number, b: number): number => (s > 0 ? Math.max(0, (b - a) / s) : 0);
  return {
    seconds: s,
    allowed_pps: r(prev.totals.allowed_packets, cur.totals.allowed_packets),
    dropped_pps: r(prev.totals.dropped_packets, cur.totals.dropped_packets),
    allowed_bps: r(prev.totals.allowed_bytes, cur.totals.allowed_bytes),
    dropped_bps: r(prev.totals.dropped_bytes, cur.totals.dropped_bytes),
    new_states_per_sec: r(prev.totals.new_states, cur.totals.new_states),
    drop_rate: +dropRate({
      allowed_packets: cur.totals.allowed_packets - prev.totals.allowed_packets,
      dropped_packets: cur.totals.dropped_packets - prev.totals.dropped_packets,
    }).toFixed(4),
  };
}

export function dropRate(t: Pick<Totals, 'allowed_packets' | 'dropped_packets'>): number {
  const all = t.allowed_packets + t.dropped_packets;
  return all ? t.dropped_packets / all : 0;
}
