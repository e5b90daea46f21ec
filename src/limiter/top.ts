/**
 * The state map decoded: per key, its address, rule, how much of its limit it is using now,
 * drops and last activity. Read with batch lookups, yielding to the event loop between batches,
 * so that a daemon stays responsive over a million entries; the heaviest are found in one pass
 * with a bounded heap (walkStates), and concurrent readers of one map share a pass (sharedWalk).
 */
import ipaddr from 'ipaddr.js';
import { Alg, Defaults, KeyFlags, RuleFlags, StateBits, type Rule } from '../generated/types';
import type { BpfMap } from '../ebpf';
import { backlog, derive, paramsOf, periodMsOf, resolveAlg, slidingEstimate, type Derived } from './models';
import { CLOCK_LAG_NS } from './rates';
import { decodeKeyState, decodeStateKey, seenAgoNs, stateMapsOf, type StateMaps } from './state';

export type { StateMaps } from './state';

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

/** What usageOf needs of a rule for one algorithm, computed once per (rule, algorithm). */
interface LimitCtx {
  alg: number;
  /** The kernel's derived values (sl_params_derive), as src/limiter/models.ts computes them. */
  d: Derived;
  /** Windows: units a window holds. */
  budget: number;
}

function limitCtx(alg: number, rule: Rule | undefined): LimitCtx | null {
  if (!rule || rule.flags & RuleFlags.NO_PKT_LIMIT) return null;
  const pps = rule.pkt.rate || BigInt(Defaults.PPS);
  const d = derive(paramsOf(pps, rule.pkt.burst, alg, rule.window_ms, periodMsOf(rule.flags, 'pkt')));
  return { alg, d, budget: Number(d.limit) };
}

const UNLIMITED = { usage: 0, available: Infinity };
const U64 = (1n << 64n) - 1n;

/** Usage and availability of a packet-dimension word under a rule (its LimitCtx), at now. */
function usageWith(c: LimitCtx | null, word: bigint, _lastSeen: bigint, now: bigint): { usage: number; available: number } {
  if (!c) return UNLIMITED;
  const { d, budget } = c;
  switch (c.alg) {
    case Alg.TOKEN:
    case Alg.GCRA: {
      const back = Number(backlog(word, (now << d.shift) & U64, d));
      const cap = Number(d.limit);
      return { usage: cap > 0 ? back / cap : 0, available: Math.max(0, Math.floor((cap - back) / Number(d.inc1))) };
    }
    case Alg.SLIDING: {
      const est = Number(slidingEstimate(word, now, d).est);
      return { usage: budget ? est / budget : 0, available: Math.max(0, Math.floor(budget - est)) };
    }
    default: {
      const wid = (now / d.windowNs) & 0xffff_ffffn;
      const used = word >> 32n === wid ? Number(word & 0xffff_ffffn) : 0;
      return { usage: budget ? used / budget : 0, available: Math.max(0, budget - used) };
    }
  }
}

/**
 * usageWith(c, word, lastSeen, now).usage for every entry of a walk: what depends only on the rule
 * and `now` is computed once; a fixed window's word is read as 32-bit halves in place, the others
 * as one u64 (the same arithmetic as usageWith, so the same result).
 */
function scorer(c: LimitCtx | null, now: bigint): (v: Buffer, off: number) => number {
  if (!c) return () => 0;
  const { d, budget } = c;
  switch (c.alg) {
    case Alg.TOKEN:
    case Alg.GCRA: {
      const nq = (now << d.shift) & U64;
      const cap = Number(d.limit);
      return (v, off) => (cap > 0 ? Number(backlog(v.readBigUInt64LE(off), nq, d)) / cap : 0);
    }
    case Alg.SLIDING:
      return (v, off) => (budget ? Number(slidingEstimate(v.readBigUInt64LE(off), now, d).est) / budget : 0);
    default: {
      const wid = Number((now / d.windowNs) & 0xffff_ffffn);
      return (v, off) => {
        const used = v.readUInt32LE(off + 4) === wid ? v.readUInt32LE(off) : 0;
        return budget ? used / budget : 0;
      };
    }
  }
}

/**
 * What usageOf needs of a state's rule: its LimitCtx (by its algorithm, which the state does not
 * record: its epoch says it was written under the rule's algorithm), and the epoch a state must
 * carry to be read (the low 16 bits of the rule's: a state of another epoch is reset by its next
 * packet, so it reads as unused now). Built on first use.
 */
interface RuleCtx { c: LimitCtx | null; alg: number; epoch: number; windowNs: bigint }
function contexts(rules: Map<number, Rule>): (ruleId: number) => RuleCtx | undefined {
  const cache = new Map<number, RuleCtx | undefined>();
  return (ruleId) => {
    if (cache.has(ruleId)) return cache.get(ruleId);
    const rule = rules.get(ruleId);
    const alg = resolveAlg(rule?.alg ?? 0);
    const c = rule ? { c: limitCtx(alg, rule), alg, epoch: rule.epoch & 0xffff, windowNs: BigInt(rule.window_ms || Defaults.WINDOW_MS) * 1_000_000n } : undefined;
    cache.set(ruleId, c);
    return c;
  };
}

// Offsets in sl_key, sl_key6 and sl_state (bpf/sluice.h), read in place from a batch.
const K_RULE = 0;
const K_FLAGS = 3;
const S_WORD = 0;
const S_DROPS = 8;
const S_EPOCH = 12;

/**
 * What the state word says of how long the key has been idle at least (ns): a window's word names
 * the window its last packet came in (every packet of a later window rolls it), so the key has been
 * idle since that window's end at least. (A token or GCRA word says nothing so plain.)
 */
function idleAtLeast(rc: RuleCtx, word: bigint, now: bigint): bigint {
  if (rc.alg === Alg.FIXED) {
    const wnow = now / rc.windowNs;
    const back = ((wnow & 0xffff_ffffn) - (word >> 32n)) & 0xffff_ffffn;
    return back > 0n ? now - (wnow - back + 1n) * rc.windowNs : 0n;
  }
  if (rc.alg === Alg.SLIDING) {
    const wnow = now / rc.windowNs;
    const back = ((wnow & 0xffffn) - (word >> 48n)) & 0xffffn;
    return back > 0n ? now - (wnow - back + 1n) * rc.windowNs : 0n;
  }
  return 0n;
}

function entryOf(family: 4 | 6, k: Buffer, v: Buffer, now: bigint, ctx: (ruleId: number) => RuleCtx | undefined): StateEntry {
  const key = decodeStateKey(family, k);
  const st = decodeKeyState(v);
  const rc = ctx(key.rule_id);
  const current = rc !== undefined && st.epoch === rc.epoch;
  // A blocked key's word holds the block's end (bpf/sluice.h, sl_state): it has nothing available.
  const { usage, available } = st.blocked ? { usage: 1, available: 0 }
    : current ? usageWith(rc.c, st.word, 0n, now) : rc?.c ? { usage: 0, available: usageWith(rc.c, 0n, 0n, now).available } : UNLIMITED;
  const idle = seenAgoNs(st.seen, now, current && !st.blocked ? idleAtLeast(rc, st.word, now) : 0n);
  return {
    key: keyText(key.family, key.plen, key.addr),
    rule: key.rule_id,
    algorithm: rc ? ALG_NAMES[rc.alg] ?? String(rc.alg) : '?',
    usage: +usage.toFixed(3),
    available,
    dropped: st.dropped,
    idle_ms: Math.round(Number(idle) / 1e6),
    blocked: st.blocked,
  };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Whether the entry at offset ko of a batch of `family`'s keys is a byte entry (listed with its key's packet entry). */
const isBytes = (keys: Buffer, ko: number): boolean => (keys[ko + K_FLAGS]! & KeyFlags.BYTES) !== 0;

/**
 * Every key of the state maps, decoded (a key with a packet and a byte limit once: its byte entry
 * is not listed). rules maps a rule id to its live rule (for limits). Yields to the event loop
 * after each batch.
 */
export async function readStates(maps: StateMaps, rules: Map<number, Rule>, batchSize = 4096, now = process.hrtime.bigint()): Promise<StateEntry[]> {
  const out: StateEntry[] = [];
  const ctx = contexts(rules);
  for (const [map, family] of stateMapsOf(maps)) {
    for (const b of map.batches({ batchSize, reuse: true })) {
      for (let i = 0; i < b.count; i++) {
        if (isBytes(b.keys, i * map.keySize)) continue;
        out.push(entryOf(family, b.keys.subarray(i * map.keySize, (i + 1) * map.keySize), b.values.subarray(i * map.valueBufferSize, (i + 1) * map.valueBufferSize), now, ctx));
      }
      await tick();
    }
  }
  return out;
}

/** The n heaviest: most of their limit in use now, then most drops. */
export function heaviest(entries: StateEntry[], n: number): StateEntry[] {
  return [...entries].sort((a, b) => b.usage - a.usage || b.dropped - a.dropped).slice(0, n);
}

/** One pass over the state map: how many entries it holds, and the heaviest of them. */
export interface StateWalk {
  /** Entries of the state maps (a key with a packet and a byte limit has two). */
  entries: number;
  /** The heaviest, heaviest first (at most the n asked for), as heaviest() orders them. */
  top: StateEntry[];
  /** Milliseconds the walk took. */
  ms: number;
  /** The kept entries' keys and states as read (raw[i] is top[i]'s), for rates between walks. */
  raw: { family: 4 | 6; k: Buffer; v: Buffer }[];
  /** CLOCK_MONOTONIC ns (process.hrtime) when the walk started and ended. */
  t0: bigint;
  t1: bigint;
  /** The earliest and latest data-path clock time an entry may have been read at (the walk's span,
   *  widened by how far the coarse clock may lag: src/limiter/rates.ts); `now` when one was given. */
  readLo: bigint;
  readHi: bigint;
  /** The rules the walk judged states by. */
  rules: Map<number, Rule>;
}

export interface WalkOptions {
  batchSize?: number;
  /** The clock reading to judge state by (default: when the walk starts). */
  now?: bigint;
}

interface Candidate { usage: number; dropped: number; seq: number; family: 4 | 6; k: Buffer; v: Buffer }

/** a ranks below b: less usage, then fewer drops, then later in the walk (heaviest() is stable). */
const below = (a: Candidate, b: Candidate): boolean =>
  a.usage !== b.usage ? a.usage < b.usage : a.dropped !== b.dropped ? a.dropped < b.dropped : a.seq > b.seq;

/**
 * Count the entries and keep the n heaviest, in one pass of batch lookups that yields to the event
 * loop after each batch. Memory is one batch and n candidates whatever the map's size: each entry
 * is scored in place (its usage and drops), and only the n kept are decoded and formatted. The
 * result equals heaviest(readStates(map, rules), n) for the same clock reading.
 */
export async function walkStates(maps: StateMaps, rules: Map<number, Rule>, n: number, o: WalkOptions = {}): Promise<StateWalk> {
  const t0 = performance.now();
  const started = process.hrtime.bigint();
  const now = o.now ?? started;
  const ctx = contexts(rules);
  // Scorers by rule id (small); a state of another epoch than its rule's is unused now.
  const scorers: (((v: Buffer, off: number) => number) | undefined)[] = [];
  const none = (): number => 0;
  const scoreOf = (ruleId: number): ((v: Buffer, off: number) => number) => {
    let s = scorers[ruleId];
    if (!s) {
      const rc = ctx(ruleId);
      const inner = rc ? scorer(rc.c, now) : none;
      const live = rc ? (v: Buffer, off: number): number => (v.readUInt16LE(off + S_EPOCH) === rc.epoch ? inner(v, off + S_WORD) : 0) : none;
      // A blocked key: usage 1, as entryOf says (its word holds the block's end, not a count).
      s = scorers[ruleId] = (v, off) => ((v.readUInt32LE(off + S_DROPS) & StateBits.BLOCKED) !== 0 ? 1 : live(v, off));
    }
    return s;
  };
  // A min-heap on rank: heap[0] is the lightest kept, the one a heavier entry replaces.
  const heap: Candidate[] = [];
  let seq = 0;
  const sift = (i: number): void => {
    const len = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < len && below(heap[l]!, heap[m]!)) m = l;
      if (r < len && below(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  let entries = 0;
  for (const [map, family] of stateMapsOf(maps)) {
    const ks = map.keySize;
    const vs = map.valueBufferSize;
    for (const b of map.batches({ batchSize: o.batchSize ?? 4096, reuse: true })) {
      entries += b.count;
      for (let i = 0; i < b.count; i++) {
        const ko = i * ks;
        if (n <= 0 || isBytes(b.keys, ko)) continue;
        seq++;
        const vo = i * vs;
        const raw = scoreOf(b.keys.readUInt16LE(ko + K_RULE))(b.values, vo);
        const full = heap.length === n;
        // Rounding (as the report rounds usage) moves a value by at most 0.0005: an entry this far
        // below the lightest kept cannot displace it, whatever its drops.
        if (full && raw < heap[0]!.usage - 0.001) continue;
        const usage = raw === 0 ? 0 : +raw.toFixed(3);
        const dropped = b.values.readUInt32LE(vo + S_DROPS) >>> 2;
        if (full) {
          const top = heap[0]!;
          // Not heavier than the lightest kept: the usual case once the heap is full.
          if (usage < top.usage || (usage === top.usage && dropped <= top.dropped)) continue;
        }
        const cand: Candidate = { usage, dropped, seq, family, k: Buffer.from(b.keys.subarray(ko, ko + ks)), v: Buffer.from(b.values.subarray(vo, vo + vs)) };
        if (heap.length < n) {
          heap.push(cand);
          for (let j = heap.length - 1; j > 0;) {
            const up = (j - 1) >> 1;
            if (!below(heap[j]!, heap[up]!)) break;
            [heap[j], heap[up]] = [heap[up]!, heap[j]!];
            j = up;
          }
        } else {
          heap[0] = cand;
          sift(0);
        }
      }
      await tick();
    }
  }
  heap.sort((a, b) => (below(a, b) ? 1 : below(b, a) ? -1 : 0));
  const t1 = process.hrtime.bigint();
  return { entries, top: heap.map((c) => entryOf(c.family, c.k, c.v, now, ctx)), ms: performance.now() - t0, raw: heap.map((c) => ({ family: c.family, k: c.k, v: c.v })), t0: started, t1,
    readLo: o.now ?? started - CLOCK_LAG_NS, readHi: o.now ?? t1, rules };
}

/** The most heavy entries a shared walk keeps: the most /v1/top serves. */
export const SHARED_TOP = 1000;

const inflight = new WeakMap<BpfMap, Promise<StateWalk>>();

/**
 * A walk of the state maps (entries and the SHARED_TOP heaviest), shared: callers that ask while
 * one runs get that one's result (the API's /v1/top and /v1/status, and the metrics, over one data
 * path's maps). rules is asked only when a new walk starts.
 */
export function sharedWalk(maps: StateMaps, rules: () => Map<number, Rule>): Promise<StateWalk> {
  const map = maps.rate_limit_map;
  let p = inflight.get(map);
  if (!p) {
    p = walkStates(maps, rules(), SHARED_TOP).finally(() => inflight.delete(map));
    inflight.set(map, p);
  }
  return p;
}
