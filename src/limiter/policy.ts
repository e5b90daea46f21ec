/**
 * Policy compilation: rules as an operator states them -> the entries of the data path's tables
 * (struct sl_rule per slot, source-prefix candidate lists for the LPM trie, the "any" list).
 * Pure: nothing here touches the kernel. src/limiter/limiter.ts writes the result.
 */
import ipaddr from 'ipaddr.js';
import { Action, Alg, Bounds, Dir, RuleFlags, type Rule } from '../generated/types';
import { ALG_BY_NAME, derive, paramsOf, TAT_SPAN, type AlgName } from './models';
import { FULL_FRAME_BYTES, MAX_RATE as MAX_RATE_NUMBER } from './bounds';
import { LimiterCode } from './errors';

export type ActionName = 'drop' | 'dry-run' | 'block';

/** One rule. Slot order is evaluation order; rules[0] of a policy is the default rule. */
export interface RuleSpec {
  /** Stable id: index of the rule's counters, part of its state keys. 0 is the default rule. */
  id: number;
  name?: string;
  /** Source prefixes, IPv4 and/or IPv6. Absent: any source. */
  src?: string[];
  /** IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6). */
  proto?: number;
  /** Destination port ranges, inclusive: [lo, hi] or a list of them (a rule per range, one id). */
  dport?: [number, number] | [number, number][];
  /** Only TCP segments with SYN set and ACK clear. */
  syn?: boolean;
  alg?: AlgName;
  /** Packets per period (ppsPeriodMs, default a second); null for no packet limit. Default 1000. */
  pps?: number | bigint | null;
  /** The period of pps: 1000 (default), 60,000 or 3,600,000 ms (3/min is pps 3, period 60,000). */
  ppsPeriodMs?: number;
  ppsBurst?: number | bigint;
  /** Bytes per period (frame bytes); absent for no byte limit. */
  bps?: number | bigint;
  bpsPeriodMs?: number;
  bpsBurst?: number | bigint;
  /** Window of fixed and sliding, in milliseconds, 1 ms to 1 h. Default: the longer period of its
   * rates (1000 for rates per second). */
  windowMs?: number;
  /** Per source prefix (v4/v6 lengths), or one bucket for the whole rule. */
  key?: { v4?: number; v6?: number } | 'rule';
  action?: ActionName;
  /** With action 'block': how long a key stays blocked. */
  blockMs?: number;
  /** Destination prefix, or several (a rule per prefix, one id). */
  dst?: string | string[];
  /** GeoIP tier number of the source (1..254 as numbered by the GeoIP compilation; 255: the default tier). */
  tier?: number;
  /** Where the rule applies. Default: ingress. */
  dir?: 'ingress' | 'egress' | 'both';
  /** Key by the packet's destination instead of its source (e.g. for egress limits per remote). */
  keyBy?: 'src' | 'dst';
  /** Hand the rule's packets to the program plugged into this slot (0..15). */
  plugin?: number;
  /**
   * Aggregate packets-per-second limit over all keys of the rule (flood safety).
   * Default: 16,384 keys at the per-key rate. null: none.
   */
  aggregate?: { pps: number | bigint; burst?: number | bigint } | null;
  /**
   * global: pps (with ppsBurst, per window) is one limit for the whole fleet, shared through the
   * daemon's fleet exchange (docs/fleet.md); the data path enforces the grants the agent writes,
   * and localPps while it has none. Fixed windows, packets only.
   */
  scope?: 'node' | 'global';
  /** With scope global: this node's limit without the fleet, packets per ppsPeriodMs; default pps. */
  localPps?: number | bigint;
}

/** A rate per period as whole units per second, rounded down (what ranks and aggregates compare). */
export function perSecond(rate: bigint, periodMs: number): bigint {
  return (rate * 1000n) / BigInt(periodMs);
}

/** Ranks above every limit: rules that do not limit by themselves (dry-run, a plugged program). */
const RANK_LAST = 0xfffffffe;

/**
 * sl_rule.strict_rank: how a rule ranks for a packet whose match fields the data path could not all
 * read (a later fragment without its first, an IPv6 chain past the walk, an unreadable L4 header).
 * Of the rules such a packet could match, the lowest rank decides: the rule that lets one key send
 * the fewest packets a second (a byte limit counts as if every packet were 64 bytes). Rules that
 * pass what they do not like (dry-run) or hand it elsewhere (a plugin) rank last.
 */
export function strictRank(pps: bigint | null, bps: bigint, last: boolean): number {
  if (last) return RANK_LAST;
  let per = pps ?? BigInt(RANK_LAST);
  if (bps > 0n && bps / 64n < per) per = bps / 64n;
  if (per < 1n) per = 1n;
  return Number(per > BigInt(RANK_LAST - 1) ? BigInt(RANK_LAST - 1) : per);
}

export interface PolicySpec {
  rules: RuleSpec[];
}

export interface CidrEntry {
  family: 4 | 6;
  /** Prefix length of the address (0..32 or 0..128). */
  plen: number;
  /** Network order, masked, 16 bytes (IPv4 in the first 4). */
  addr: Buffer;
  /** Ordered rule slots. */
  slots: number[];
}

export interface CompiledPolicy {
  /**
   * Rules by slot; version and epoch are filled in when written. A rule with several port ranges
   * or destinations takes a slot for each, all with its id (counters and state are shared).
   */
  rules: Omit<Rule, 'version' | 'epoch'>[];
  cidrs: CidrEntry[];
  any: number[];
  /** id -> its slots */
  slotsOf: Map<number, number[]>;
}

export class PolicyError extends Error {
  readonly code = LimiterCode.Policy;
  constructor(readonly problems: string[]) {
    super(`invalid policy: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n  - ${problems.join('\n  - ')}`);
    this.name = 'PolicyError';
  }
}

const MAX_RATE = BigInt(MAX_RATE_NUMBER);
const MAX_BURST = 1n << 34n;
/** Periods a rate may be stated per, and the flags that say so (sl_rule.flags). */
const PERIOD_FLAGS: Record<number, { pkt: number; byt: number; name: string }> = {
  1000: { pkt: 0, byt: 0, name: 's' },
  60_000: { pkt: RuleFlags.PKT_PER_MIN, byt: RuleFlags.BYT_PER_MIN, name: 'min' },
  3_600_000: { pkt: RuleFlags.PKT_PER_HOUR, byt: RuleFlags.BYT_PER_HOUR, name: 'h' },
};
export const MAX_WINDOW_MS = 3_600_000;
/** The count fields of the window words (limiters.h): fixed 32 bits, sliding 24. */
const WINDOW_CAP: Record<string, bigint> = { fixed: 0xffff_ffffn, sliding: 0xff_ffffn };
/** A full-size Ethernet frame without FCS: a byte limit must let one through. */
export const FULL_FRAME = BigInt(FULL_FRAME_BYTES);

/**
 * What one dimension's limits come to in the data path, or why they cannot be kept exactly:
 * the accepted ranges of docs/policy.md (Ranges), said in the operator's terms.
 */
export function dimensionProblems(alg: AlgName, dim: 'pps' | 'bps', rate: bigint, periodMs: number, burst: bigint, windowMs: number): string[] {
  const out: string[] = [];
  const per = PERIOD_FLAGS[periodMs]?.name ?? `${periodMs} ms`;
  const unit = dim === 'pps' ? 'packets' : 'bytes';
  const p = paramsOf(rate, burst, ALG_BY_NAME[alg], windowMs, BigInt(periodMs));
  const d = derive(p);
  if (alg === 'token' || alg === 'gcra') {
    if (p.burst * d.inc1 > TAT_SPAN) out.push(`${dim}Burst ${p.burst} at ${rate}/${per} is a bucket deeper than the data path keeps exactly (burst / rate at most about ${Number(TAT_SPAN / d.inc1)} ${unit})`);
    return out;
  }
  // The windows: floor(rate x window / period) + burst units per window, exactly, within the word.
  const exact = (rate * BigInt(windowMs)) / BigInt(periodMs) + p.burst;
  const cap = WINDOW_CAP[alg]!;
  const least = dim === 'pps' ? 1n : FULL_FRAME;
  if (exact > cap) {
    out.push(`${alg}: ${rate}/${per} over a ${windowMs} ms window${p.burst ? ` plus burst ${p.burst}` : ''} is ${exact} ${unit} per window, more than the ${alg} window counts (${cap}): use a shorter window${alg === 'sliding' ? ', fixed' : ''} or token`);
  } else if (exact < least) {
    const need = Number(((least - p.burst) * BigInt(periodMs) + rate - 1n) / rate);
    out.push(`${alg}: ${rate}/${per} over a ${windowMs} ms window is ${exact} ${unit} per window${dim === 'bps' ? `, less than one full-size frame (${FULL_FRAME} bytes)` : ''}: ${dim === 'pps' ? 'no packet' : 'such frames'} could ever pass; use a window of at least ${need} ms${dim === 'pps' ? ' or a burst' : ' or a byte burst'}`);
  } else if (d.limit !== exact) {
    out.push(`${alg}: the window budget ${exact} is not kept exactly (${d.limit})`);
  }
  return out;
}

export interface Prefix { family: 4 | 6; plen: number; addr: Buffer }

const V4_DECIMAL = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})(?:\/(0|[1-9]\d?))?$/;

/**
 * Plain dotted-decimal IPv4 ("192.0.2.0/24", "192.0.2.1"), the bulk of every list feed, without
 * ipaddr.js (ten times faster). Anything else (octal, hex, short forms, IPv6, out of range) is
 * left to ipaddr.js: undefined.
 */
function parseV4Decimal(text: string): Prefix | undefined {
  const m = V4_DECIMAL.exec(text);
  if (!m) return undefined;
  const plen = m[5] === undefined ? 32 : Number(m[5]);
  if (plen > 32) return undefined;
  // From the pool (not an ArrayBuffer of its own): a list of 100,000 prefixes is 100,000 of these.
  const addr = Buffer.allocUnsafe(16).fill(0);
  for (let i = 0; i < 4; i++) {
    const o = Number(m[i + 1]);
    if (o > 255) return undefined;
    addr[i] = o;
  }
  maskInPlace(addr, plen);
  return { family: 4, plen, addr };
}

/** Parse "a.b.c.d/n", "x::/n" or a bare address into a masked prefix. Throws with a clear message. */
export function parsePrefix(text: string): Prefix {
  const fast = parseV4Decimal(text);
  if (fast) return fast;
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  let plen: number;
  try {
    if (text.includes('/')) {
      [addr, plen] = ipaddr.parseCIDR(text);
    } else {
      addr = ipaddr.parse(text);
      plen = addr.kind() === 'ipv4' ? 32 : 128;
    }
  } catch {
    throw new Error(`"${text}" is not an IPv4 or IPv6 address or prefix (expected e.g. 192.0.2.0/24 or 2001:db8::/32)`);
  }
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    throw new Error(`"${text}" is an IPv4-mapped IPv6 address: write the IPv4 prefix instead`);
  }
  const family = addr.kind() === 'ipv4' ? 4 : 6;
  const bytes = Buffer.alloc(16);
  Buffer.from(addr.toByteArray()).copy(bytes);
  maskInPlace(bytes, plen);
  return { family, plen, addr: bytes };
}

export function maskInPlace(addr: Buffer, plen: number): void {
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, plen - i * 8));
    addr[i]! &= (0xff << (8 - keep)) & 0xff;
  }
}

export function formatPrefix(p: Prefix): string {
  if (p.family === 4) return `${p.addr[0]}.${p.addr[1]}.${p.addr[2]}.${p.addr[3]}/${p.plen}`;
  return `${ipaddr.fromByteArray([...p.addr.subarray(0, 16)]).toString()}/${p.plen}`;
}

/** Whether outer (same family, no longer) contains inner. */
export function covers(outer: Prefix, inner: Prefix): boolean {
  if (outer.family !== inner.family || outer.plen > inner.plen) return false;
  const a = Buffer.from(inner.addr);
  maskInPlace(a, outer.plen);
  return a.equals(outer.addr);
}

/** A whole number as bigint; 'bad' for anything else (fractions, NaN, strings). */
function whole(v: unknown): bigint | 'bad' | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'bigint') return v;
  return typeof v === 'number' && Number.isSafeInteger(v) ? BigInt(v) : 'bad';
}

/** Validate and compile. Every problem is reported at once; nothing is partially accepted. */
export function compilePolicy(policy: PolicySpec, maxRules: number): CompiledPolicy {
  const problems: string[] = [];
  const { rules } = policy;
  if (rules.length === 0) problems.push('rules: the default rule (rules[0]) is missing');
  const ids = new Set<number>();
  const prefixes: Prefix[][] = [];
  const out: CompiledPolicy['rules'] = [];
  const slotsOf = new Map<number, number[]>();

  rules.forEach((r, index) => {
    const slot = index; // position in the policy; kernel slots are in slotsOf
    const at = `rules[${slot}]${r.name ? ` (${r.name})` : ''}`;
    const bad = (msg: string): void => { problems.push(`${at}: ${msg}`); };
    if (!Number.isInteger(r.id) || r.id < 0 || r.id >= maxRules) bad(`id ${r.id} must be an integer from 0 to ${maxRules - 1}`);
    else if (ids.has(r.id)) bad(`id ${r.id} is used twice`);
    ids.add(r.id);
    if (slot === 0 && r.id !== 0) bad('the default rule must have id 0');
    if (slot > 0 && r.id === 0) bad('id 0 is reserved for the default rule');
    if (slot === 0 && (r.src || r.proto !== undefined || r.dport || r.syn || r.dst || r.tier)) bad('the default rule matches everything: it takes no src, dst, proto, dport, syn or tier (it may take dir)');

    const pfx: Prefix[] = [];
    for (const s of r.src ?? []) {
      try { pfx.push(parsePrefix(s)); } catch (e) { bad(`src: ${(e as Error).message}`); }
    }
    if (r.src && r.src.length === 0) bad('src is empty: leave it out to match any source');
    prefixes.push(pfx);

    if (r.proto !== undefined && (!Number.isInteger(r.proto) || r.proto < 1 || r.proto > 255)) bad(`proto ${r.proto} must be an IP protocol number from 1 to 255`);
    const ranges: [number, number][] = !r.dport ? [[0, 0]] : typeof r.dport[0] === 'number' ? [r.dport as [number, number]] : (r.dport as [number, number][]);
    for (const [lo, hi] of r.dport ? ranges : []) {
      if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 1 || hi > 65535 || lo > hi) bad(`dport [${lo}, ${hi}] must be a port or range within 1..65535`);
    }
    if (r.dport && ranges.length === 0) bad('dport is an empty list: leave it out to match any port');
    if (r.dport && r.proto !== undefined && ![6, 17, 132].includes(r.proto)) bad('dport needs proto tcp (6), udp (17) or sctp (132), or no proto');
    const alg = r.alg ?? 'fixed';
    if (!(alg in ALG_BY_NAME)) bad(`alg "${alg}" is not one of fixed, sliding, token, gcra`);

    let flags = 0;
    const rate = (name: string, v: unknown): bigint => {
      const n = whole(v);
      if (n === undefined) return 0n;
      if (n === 'bad' || n < 1n || n > MAX_RATE) {
        bad(`${name} ${String(v)} must be a whole number from 1 to ${MAX_RATE} per second`);
        return 0n;
      }
      return n;
    };
    const burst = (name: string, v: unknown): bigint => {
      const n = whole(v);
      if (n === undefined) return 0n;
      if (n === 'bad' || n < 0n || n > MAX_BURST) {
        bad(`${name} ${String(v)} must be a whole number from 0 to ${MAX_BURST} (0: the default)`);
        return 0n;
      }
      return n;
    };
    const pps = r.pps === null ? null : rate('pps', r.pps ?? 1000);
    if (pps === null) flags |= RuleFlags.NO_PKT_LIMIT;
    const bps = rate('bps', r.bps);
    if (pps === null && r.bps === undefined) bad('a rule with no packet limit (pps: null) needs a byte limit (bps)');
    const period = (name: string, v: number | undefined, dim: 'pkt' | 'byt'): number => {
      const ms = v ?? 1000;
      const f = PERIOD_FLAGS[ms];
      if (!f) {
        bad(`${name} ${String(v)} must be 1000 (a second), 60000 (a minute) or 3600000 (an hour)`);
        return 1000;
      }
      flags |= f[dim];
      return ms;
    };
    const ppsPeriod = period('ppsPeriodMs', r.ppsPeriodMs, 'pkt');
    const bpsPeriod = period('bpsPeriodMs', r.bpsPeriodMs, 'byt');
    const ppsBurst = burst('ppsBurst', r.ppsBurst);
    const bpsBurst = burst('bpsBurst', r.bpsBurst);
    if ((alg === 'token' || alg === 'gcra') && r.bps !== undefined && bpsBurst !== 0n && bpsBurst < FULL_FRAME) {
      bad(`bpsBurst ${bpsBurst} is smaller than one full-size frame (${FULL_FRAME} bytes): such packets could never pass`);
    }
    const longest = Math.max(pps !== null ? ppsPeriod : 1000, r.bps !== undefined ? bpsPeriod : 1000);
    const windowMs = r.windowMs ?? longest;
    const windowOk = Number.isInteger(windowMs) && windowMs >= 1 && windowMs <= MAX_WINDOW_MS;
    if (!windowOk) bad(`windowMs ${windowMs} must be a whole number of milliseconds from 1 to ${MAX_WINDOW_MS} (an hour)`);
    if (windowOk && alg in ALG_BY_NAME) {
      if (pps !== null && pps > 0n) for (const m of dimensionProblems(alg, 'pps', pps, ppsPeriod, ppsBurst, windowMs)) bad(m);
      if (bps > 0n) for (const m of dimensionProblems(alg, 'bps', bps, bpsPeriod, bpsBurst, windowMs)) bad(m);
    }

    let keyV4 = 32;
    let keyV6 = 64;
    if (r.key === 'rule') flags |= RuleFlags.PER_RULE;
    else if (r.key) {
      keyV4 = r.key.v4 ?? 32;
      keyV6 = r.key.v6 ?? 64;
      if (!Number.isInteger(keyV4) || keyV4 < 1 || keyV4 > 32) bad(`key.v4 ${keyV4} must be a prefix length from 1 to 32`);
      if (!Number.isInteger(keyV6) || keyV6 < 1 || keyV6 > 128) bad(`key.v6 ${keyV6} must be a prefix length from 1 to 128`);
    }
    if (r.syn) flags |= RuleFlags.MATCH_SYN;
    if (r.syn && r.proto !== undefined && r.proto !== 6) bad('syn matches TCP only: use proto 6 or leave proto out');
    const action = r.action ?? 'drop';
    if (!['drop', 'dry-run', 'block'].includes(action)) bad(`action "${action}" is not one of drop, dry-run, block`);
    const blockMs = r.blockMs ?? 0;
    if (action === 'block' && (!Number.isInteger(blockMs) || blockMs < 1 || blockMs > 0xffffffff)) bad('action block needs blockMs, a whole number of milliseconds from 1 to 4294967295');

    const dsts: (Prefix | undefined)[] = [];
    for (const d of r.dst === undefined ? [] : typeof r.dst === 'string' ? [r.dst] : r.dst) {
      try { dsts.push(parsePrefix(d)); } catch (e) { bad(`dst: ${(e as Error).message}`); }
    }
    if (r.dst !== undefined && typeof r.dst !== 'string' && r.dst.length === 0) bad('dst is an empty list: leave it out to match any destination');
    if (!dsts.length) dsts.push(undefined);
    if (r.tier !== undefined && (!Number.isInteger(r.tier) || r.tier < 1 || r.tier > 255)) bad(`tier ${r.tier} must be a tier number from 1 to 254, or 255 for the default tier`);
    const dir = r.dir ?? 'ingress';
    if (!['ingress', 'egress', 'both'].includes(dir)) bad(`dir "${dir}" is not one of ingress, egress, both`);
    if (r.keyBy === 'dst') flags |= RuleFlags.KEY_DST;
    else if (r.keyBy !== undefined && r.keyBy !== 'src') bad(`keyBy "${r.keyBy}" is not one of src, dst`);
    if (r.plugin !== undefined && (!Number.isInteger(r.plugin) || r.plugin < 0 || r.plugin >= Bounds.PLUGIN_SLOTS)) bad(`plugin slot ${r.plugin} must be from 0 to ${Bounds.PLUGIN_SLOTS - 1}`);
    let kernelPps = pps;
    if (r.scope === 'global') {
      flags |= RuleFlags.GLOBAL;
      if (pps === null) bad('scope global needs a packet rate (the fleet shares packets, not bytes)');
      if (alg !== 'fixed') bad(`scope global works in fixed windows (the fleet counts each window): use algorithm fixed, not ${alg}`);
      if (r.bps !== undefined) bad('scope global limits packets: a byte limit (bytes_rate) cannot be shared; leave it out or use a rule of its own');
      if (r.plugin !== undefined) bad('scope global and a plugin: the plugged program would decide, not the fleet');
      if (r.localPps !== undefined) {
        const lp = rate('local', r.localPps);
        if (lp > 0n) {
          kernelPps = lp;
          if (windowOk && pps !== null) for (const m of dimensionProblems('fixed', 'pps', lp, ppsPeriod, ppsBurst, windowMs)) bad(`local: ${m}`);
        }
      }
    } else if (r.scope !== undefined && r.scope !== 'node') bad(`scope "${String(r.scope)}" is not one of node, global`);
    else if (r.localPps !== undefined) bad('local is the fallback of a global rule: it needs scope global');
    let agg = { rate: 0n, burst: 0n };
    if (r.aggregate === null) flags |= RuleFlags.NO_AGG;
    else if (r.aggregate) agg = { rate: rate('aggregate pps', r.aggregate.pps), burst: burst('aggregate burst', r.aggregate.burst) };

    const first = out.length;
    for (const [dlo, dhi] of ranges) for (const dst of dsts) out.push({
      id: r.id,
      alg: ALG_BY_NAME[alg] ?? Alg.FIXED,
      action: action === 'dry-run' ? Action.DRYRUN : action === 'block' ? Action.BLOCK : Action.DROP,
      flags,
      key_v4: keyV4,
      key_v6: keyV6,
      proto: r.proto ?? 0,
      tier: r.tier ?? 0,
      dport_lo: dlo,
      dport_hi: dhi,
      window_ms: windowMs,
      block_ms: action === 'block' ? blockMs : 0,
      dir: dir === 'egress' ? Dir.EGRESS : dir === 'both' ? Dir.INGRESS | Dir.EGRESS : Dir.INGRESS,
      plugin: r.plugin === undefined ? 0 : r.plugin + 1,
      dst_family: dst?.family ?? 0,
      dst_plen: dst?.plen ?? 0,
      dst_addr: dst?.addr ?? Buffer.alloc(16),
      strict_rank: strictRank(pps === null ? null : perSecond(pps, ppsPeriod), perSecond(bps, bpsPeriod), action === 'dry-run' || r.plugin !== undefined),
      pkt: { rate: kernelPps ?? 0n, burst: ppsBurst },
      byt: { rate: bps, burst: bpsBurst },
      agg,
    });
    slotsOf.set(r.id, Array.from({ length: out.length - first }, (_, i) => first + i));
  });
  if (out.length > maxRules) problems.push(`the rules take ${out.length} slots (one per port range and destination), but the program was loaded with room for ${maxRules}`);

  // Candidate lists. Each distinct source prefix gets every rule that applies to it: rules one of
  // whose prefixes covers it, and rules with no source condition (as if /0). Longest prefix first,
  // then rule order. The trie returns the longest prefix that covers an address, and every rule
  // prefix that covers the address covers that one too, so the list is complete for the address.
  const keyOf = (p: Prefix): string => `${p.family}|${p.addr.toString('hex')}|${p.plen}`;
  const distinct = new Map<string, Prefix>();
  prefixes.forEach((list) => list.forEach((p) => distinct.set(keyOf(p), p)));
  // The rules (by index) that list each exact prefix: a prefix's covering prefixes are its own
  // masks to every shorter length, so each is found by lookup rather than by comparing it with
  // every prefix of every rule (which took 15 s for 10,000 prefixes).
  const owners = new Map<string, number[]>();
  rules.forEach((r, index) => {
    if (index === 0 || !r.src) return;
    for (const q of prefixes[index]!) {
      const k = keyOf(q);
      const list = owners.get(k);
      if (!list) owners.set(k, [index]);
      else if (list[list.length - 1] !== index) list.push(index);
    }
  });
  const slotsAt = (index: number): number[] => slotsOf.get(rules[index]!.id) ?? [];
  const anyIndex = rules.flatMap((r, i) => (i > 0 && !r.src ? [i] : []));
  const anySlots = anyIndex.flatMap(slotsAt);
  const cidrs: CidrEntry[] = [];
  for (const p of distinct.values()) {
    // Each rule's longest prefix that covers p, walking from p itself to /0.
    const best = new Map<number, number>();
    const q: Prefix = { family: p.family, plen: p.plen, addr: Buffer.from(p.addr) };
    for (let plen = p.plen; plen >= 0; plen--) {
      q.plen = plen;
      maskInPlace(q.addr, plen);
      for (const index of owners.get(keyOf(q)) ?? []) if (!best.has(index)) best.set(index, plen);
    }
    const applying = [...anyIndex.map((index) => ({ index, plen: -1 })), ...[...best].map(([index, plen]) => ({ index, plen }))];
    applying.sort((a, b) => b.plen - a.plen || a.index - b.index);
    const slots = applying.flatMap((a) => slotsAt(a.index));
    if (slots.length > Bounds.MAX_CANDS) {
      problems.push(`${formatPrefix(p)}: ${slots.length} rule slots apply to this source prefix (a rule takes one per port range and destination); at most ${Bounds.MAX_CANDS} can (merge rules or narrow their sources)`);
    }
    cidrs.push({ family: p.family, plen: p.plen, addr: p.addr, slots });
  }
  if (anySlots.length > Bounds.MAX_CANDS) {
    problems.push(`${anySlots.length} rule slots have no source condition (a rule takes one per port range and destination); at most ${Bounds.MAX_CANDS} can`);
  }
  if (problems.length) throw new PolicyError(problems);
  return { rules: out, cidrs, any: anySlots, slotsOf };
}
