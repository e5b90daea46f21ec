/**
 * The per-client state maps as user space reads them (bpf/sluice.h, struct sl_key, sl_key6 and
 * sl_state): IPv4 sources and per-rule buckets in rate_limit_map (8-byte keys), IPv6 sources in
 * rate_limit_map6 (20-byte keys), a 16-byte value of one algorithm word, the key's drops and flags,
 * the epoch it was written under and the time it was last seen (coarse).
 */
import { Bounds, decodeKey, decodeKey6, decodeState, encodeKey, encodeKey6, KeyFlags, SL_KEY_SIZE, SL_KEY6_SIZE, StateBits } from '../generated/types';
import type { BpfMap } from '../ebpf';

/** The state maps of one data path (LimiterMaps has both; a map of one family alone will do). */
export interface StateMaps {
  rate_limit_map: BpfMap;
  rate_limit_map6?: BpfMap;
}

/** The maps with the family of their keys (4 also holds the per-rule buckets). */
export function stateMapsOf(maps: StateMaps): [BpfMap, 4 | 6][] {
  return maps.rate_limit_map6 ? [[maps.rate_limit_map, 4], [maps.rate_limit_map6, 6]] : [[maps.rate_limit_map, 4]];
}

/** A key of either map, decoded. family 0: a per-rule bucket (no address). */
export interface StateKey {
  rule_id: number;
  family: 0 | 4 | 6;
  plen: number;
  /** 16 bytes, network order; IPv4 in the first 4, the rest zero. */
  addr: Buffer;
  /** The byte dimension's word of a key with a packet and a byte limit. */
  bytes: boolean;
}

/** The map and key bytes of a key. */
export function encodeStateKey(k: Omit<StateKey, 'bytes'> & { bytes?: boolean }): { map: 'rate_limit_map' | 'rate_limit_map6'; key: Buffer } {
  const flags = (k.family === 0 ? KeyFlags.PER_RULE : 0) | (k.bytes ? KeyFlags.BYTES : 0);
  if (k.family === 6) return { map: 'rate_limit_map6', key: encodeKey6({ rule_id: k.rule_id, plen: k.plen, flags, addr: k.addr }) };
  return { map: 'rate_limit_map', key: encodeKey({ rule_id: k.rule_id, plen: k.family === 0 ? 0 : k.plen, flags, addr: k.family === 0 ? Buffer.alloc(4) : k.addr.subarray(0, 4) }) };
}

/** A key read from the map of `family` (4: rate_limit_map, 6: rate_limit_map6). */
export function decodeStateKey(family: 4 | 6, b: Buffer): StateKey {
  if (family === 6) {
    const k = decodeKey6(b.subarray(0, SL_KEY6_SIZE));
    return { rule_id: k.rule_id, family: 6, plen: k.plen, addr: k.addr, bytes: (k.flags & KeyFlags.BYTES) !== 0 };
  }
  const k = decodeKey(b.subarray(0, SL_KEY_SIZE));
  const addr = Buffer.alloc(16);
  k.addr.copy(addr);
  return { rule_id: k.rule_id, family: k.flags & KeyFlags.PER_RULE ? 0 : 4, plen: k.plen, addr, bytes: (k.flags & KeyFlags.BYTES) !== 0 };
}

/** A key's state, decoded. */
export interface KeyState {
  /** The algorithm word of the key's dimension. */
  word: bigint;
  /** Packets dropped by its limit (saturating near 2^30). */
  dropped: number;
  /** Its sl_penalty record holds its state as of its last drop. */
  penalized: boolean;
  /**
   * Blocked (action block) until its sl_penalty record's blocked_until, which `word` holds
   * meanwhile (ns); cleared by its first packet after that.
   */
  blocked: boolean;
  /** The low 16 bits of the rule epoch it was (re)initialised under. */
  epoch: number;
  /** When it was last seen, in units of 2^SEEN_SHIFT ns, modulo 2^16. */
  seen: number;
}

export function decodeKeyState(b: Buffer): KeyState {
  const s = decodeState(b);
  return {
    word: s.word,
    dropped: s.drops >>> 2,
    penalized: (s.drops & StateBits.PENALIZED) !== 0,
    blocked: (s.drops & StateBits.BLOCKED) !== 0,
    epoch: s.epoch,
    seen: s.seen,
  };
}

/** Whether a state was written under the rule's current epoch (else its next packet resets it). */
export function currentEpoch(st: { epoch: number }, ruleEpoch: number): boolean {
  return st.epoch === (ruleEpoch & 0xffff);
}

/** One unit of sl_state.seen, and the span after which it wraps. */
export const SEEN_UNIT_NS = 1n << BigInt(Bounds.SEEN_SHIFT);
export const SEEN_WRAP_NS = SEEN_UNIT_NS << 16n;

/**
 * How long ago a key was last seen, at the kernel clock `now` (ns), in whole units of its seen field
 * (16.8 ms): exact to a unit up to the field's wrap (18.3 minutes); beyond it, the first such time
 * that is not below `atLeast` (what the state word says of it, see top.ts), else modulo the wrap.
 */
export function seenAgoNs(seen: number, now: bigint, atLeast = 0n): bigint {
  const units = ((now >> BigInt(Bounds.SEEN_SHIFT)) - BigInt(seen)) & 0xffffn;
  let ago = units * SEEN_UNIT_NS;
  while (ago + SEEN_UNIT_NS < atLeast) ago += SEEN_WRAP_NS;
  return ago;
}

/**
 * The kernel clock time a key was last seen (to within its unit), when that was less than the wrap
 * before `now`: the start of the unit it was seen in.
 */
export function seenAt(seen: number, now: bigint): bigint {
  const units = ((now >> BigInt(Bounds.SEEN_SHIFT)) - BigInt(seen)) & 0xffffn;
  return ((now >> BigInt(Bounds.SEEN_SHIFT)) - units) << BigInt(Bounds.SEEN_SHIFT);
}

/** Entries of both state maps (a walk of their keys). */
export function countStates(maps: StateMaps): number {
  let n = 0;
  for (const [m] of stateMapsOf(maps)) for (const _ of m.keys()) n++;
  return n;
}

/** Delete every entry of both state maps. */
export function clearStates(maps: StateMaps): void {
  for (const [m] of stateMapsOf(maps)) for (const k of [...m.keys()]) m.delete(k);
}
