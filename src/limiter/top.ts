/**
 * The state map decoded: per key, its address, rule, how much of its limit it is using now,
 * drops and last activity. Read with batch lookups, yielding to the event loop between batches,
 * so that a daemon stays responsive over a million entries.
 */
import ipaddr from 'ipaddr.js';
import { Alg, Defaults, decodeKey, decodeState, RuleFlags, SL_KEY_SIZE, type Rule } from '../generated/types';
import type { BpfMap } from '../ebpf';
import { backlog, derive, paramsOf, periodMsOf, slidingEstimate } from './models';

export interface StateEntry {
  /** The key's address with its prefix length ("192.0.2.0/24"), or "*" for a per-rule bucket. */
  key: string;
  rule: number;
  algorithm: string;
  /** Share of the packet limit in use now (0..1, above 1 for a GCRA or window over its budget). */
  usage: number;
  /** Packets the key may still send right now (tokens, or what is left of the window). */
  available: number;
  dropped: number;
  /** Milliseconds since its last packet. */
  idle_ms: number;
  blocked: boolean;
}

const ALG_NAMES: Record<number, string> = { [Alg.FIXED]: 'fixed', [Alg.SLIDING]: 'sliding', [Alg.TOKEN]: 'token', [Alg.GCRA]: 'gcra' };

function keyText(family: number, plen: number, addr: Buffer): string {
  if (family === 0) return '*';
  const bytes = [...addr.subarray(0, family === 4 ? 4 : 16)];
  return `${ipaddr.fromByteArray(bytes).toString()}/${plen}`;
}

/** Usage and availability of a packet-dimension word under a rule, at now. */
function usageOf(alg: number, word: bigint, _lastSeen: bigint, now: bigint, rule: Rule | undefined): { usage: number; available: number } {
  if (!rule || rule.flags & RuleFlags.NO_PKT_LIMIT) return { usage: 0, available: Infinity };
  const pps = rule.pkt.rate || BigInt(Defaults.PPS);
  const p = paramsOf(pps, rule.pkt.burst, alg, rule.window_ms, periodMsOf(rule.flags, 'pkt'));
  const d = derive(p);
  const budget = Number(d.limit);
  const wns = d.windowNs;
  switch (alg) {
    case Alg.TOKEN:
    case Alg.GCRA: {
      const back = Number(backlog(word, (now << d.shift) & ((1n << 64n) - 1n), d));
      const cap = Number(d.limit);
      return { usage: cap > 0 ? back / cap : 0, available: Math.max(0, Math.floor((cap - back) / Number(d.inc1))) };
    }
    case Alg.SLIDING: {
      const est = Number(slidingEstimate(word, now, d).est);
      return { usage: budget ? est / budget : 0, available: Math.max(0, Math.floor(budget - est)) };
    }
    default: {
      const wid = (now / wns) & 0xffff_ffffn;
      const used = word >> 32n === wid ? Number(word & 0xffff_ffffn) : 0;
      return { usage: budget ? used / budget : 0, available: Math.max(0, budget - used) };
    }
  }
}

/**
 * Every entry of rate_limit_map, decoded. rules maps a rule id to its live rule (for limits).
 * Yields to the event loop after each batch.
 */
export async function readStates(map: BpfMap, rules: Map<number, Rule>, batchSize = 4096): Promise<StateEntry[]> {
  const out: StateEntry[] = [];
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC: the data path's clock
  for (const batch of map.lookupBatch({ batchSize })) {
    for (const [k, v] of batch) {
      const key = decodeKey(k.subarray(0, SL_KEY_SIZE));
      const st = decodeState(v);
      const { usage, available } = usageOf(st.alg, st.pkt, st.last_seen, now, rules.get(key.rule_id));
      out.push({
        key: keyText(key.family, key.plen, key.addr),
        rule: key.rule_id,
        algorithm: ALG_NAMES[st.alg] ?? String(st.alg),
        usage: +usage.toFixed(3),
        available,
        dropped: Number(st.dropped),
        idle_ms: st.last_seen > now ? 0 : Math.round(Number(now - st.last_seen) / 1e6),
        blocked: st.blocked_until > now,
      });
    }
    await new Promise((r) => setImmediate(r));
  }
  return out;
}

/** The n heaviest: most of their limit in use now, then most drops. */
export function heaviest(entries: StateEntry[], n: number): StateEntry[] {
  return [...entries].sort((a, b) => b.usage - a.usage || b.dropped - a.dropped).slice(0, n);
}
