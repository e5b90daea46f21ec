/**
 * The fuzzer: random and mutated frames through the test build of the data path
 * (BPF_PROG_TEST_RUN), checked against invariants that need no second parser. Used by the CI test
 * (test/fuzz/fuzz.test.ts) and by `npm run fuzz` (test/fuzz/cli.ts).
 *
 * Frames come from a corpus built with the packet builder (test/lib/packet.ts) and are mutated
 * (truncations, bit flips, byte overwrites, header splices, length-field lies). Frame i of seed S
 * is a pure function of (S, i), so any frame can be rebuilt from its index.
 *
 * What is checked, and how (docs/datapath.md, "Fuzzing"):
 *   run       every frame of 14 bytes or more runs without error and returns XDP_PASS or XDP_DROP;
 *             a shorter one is refused by the kernel (EINVAL) and counts nowhere;
 *   verdicts  per batch, the counters' pass/drop packets and bytes equal what the runs returned;
 *   reasons   per batch and slot, every verdict is counted under exactly one reason that goes with
 *             it (rule slots: PASS / LIMIT / CONTENDED; the global slot: the list, non-IP and
 *             malformed reasons), the counted-only notes (EXT_CHAIN, FRAG_ORPHAN, a malformed
 *             reason of a frame with a source, UNCERTAIN) at most once a frame and only on frames
 *             charged to a rule; per probed frame (run alone, counters read before and after) all
 *             of it exactly;
 *   sources   a frame whose source is readable (decided by comparing bytes with the frame it was
 *             mutated from, see readableSource) is charged to a rule keyed by that source, unless
 *             a list or a reason that is about it (TINY_FRAG; malformed with malformed_drop)
 *             decides: exactly per batch of such frames, and per probe down to the state word of
 *             the key (rule id, source) moving by one packet's cost on a pass;
 *   limits    the clock is fixed within a round (TestDatapath.setNow) and every rule is a token
 *             bucket of rate R and burst B, so each key passes at most B packets a round, and per
 *             probe a key that has passed fewer than B this round is not dropped over the limit
 *             (the rule as written, not the derived bucket, says what conforms): checked
 *             on the state of every key, and per readable source on its passes (never more than
 *             its keys were charged); the charges over all keys equal the PASS counters; every key
 *             is well formed (a rule id of the policy, the rule's key length, the address masked,
 *             inside the rule's source prefixes); insertions equal the entries (nothing evicted);
 *   padding   bytes past the IP length and fields the data path does not read (MACs, TTL, IPv4
 *             checksum and options, IPv6 flow label …) never change how a frame is decided: a
 *             batch of readable-source frames and the same frames with those bytes replaced (and
 *             64 more) decide as many frames in each slot for the same reasons; per probe, exactly.
 *
 * A failure throws FuzzFailure, whose message has the seed, the frame index, the frame's hex and
 * the commands that replay it.
 */
import { Alg, decodeCounters, Reason, SL_COUNTERS_SIZE, type Counters } from '../../src/generated/types';
import { decodeKeyState, decodeStateKey, encodeStateKey, stateMapsOf } from '../../src/limiter/state';
import type { BpfMap } from '../../src/ebpf';
import { addCounters } from '../../src/limiter/limiter';
import { backlog, derive, paramsOf, type Derived } from '../../src/limiter/models';
import { covers, parsePrefix, type PolicySpec, type Prefix, type RuleSpec } from '../../src/limiter/policy';
import type { Lists } from '../../src/limiter/lists';
import { type TestDatapath, XDP_DROP, XDP_PASS } from '../lib/datapath';
import { ETH_P, IPPROTO, pkt, type LayerInfo, type PacketBuilder } from '../lib/packet';
import { rng } from '../lib/rng';

const U64 = (1n << 64n) - 1n;

// ---------------------------------------------------------------------------------------------
// Randomness


/** The seed of frame i: a hash of (seed, i), so that frames can be rebuilt one by one. */
function frameSeed(seed: number, i: number): number {
  let h = Math.imul(seed >>> 0 ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(i + 1, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------
// The corpus

export interface Base {
  name: string;
  buf: Buffer;
  layers: LayerInfo[];
  /** 0: no IP header (ARP, LLDP, too many VLAN tags). */
  family: 0 | 4 | 6;
  /** Where the IP header starts. */
  ipOff: number;
}

const V4_SOURCES = ['192.0.2.1', '192.0.2.2', '192.0.2.33', '198.51.100.7', '198.51.100.200', '203.0.113.5', '192.0.2.66', '192.0.2.99'];
const V6_SOURCES = ['2001:db8:1:1::1', '2001:db8:1:2::1', '2001:db8:100:5::9', '2001:db8:100:6::1', '2001:db8:dead::1', '2001:db8:a110::1', 'fe80::1'];
const V4_DSTS = ['192.0.2.200', '203.0.113.130'];
const V6_DSTS = ['2001:db8:ff::1', '2001:db8:d57::1'];

type L3 = (b: PacketBuilder, src: string, dst: string) => PacketBuilder;

const V4: [string, L3][] = [
  ['udp/53', (b, s, d) => b.ipv4({ src: s, dst: d }).udp({ sport: 5353, dport: 53 }).payload(30)],
  ['udp/123', (b, s, d) => b.ipv4({ src: s, dst: d }).udp({ sport: 123, dport: 123 }).payload(48)],
  ['tcp syn/80', (b, s, d) => b.ipv4({ src: s, dst: d, df: true }).tcp({ sport: 40000, dport: 80, flags: 'S', options: [2, 4, 5, 180, 1, 1, 4, 2] })],
  ['tcp ack/443', (b, s, d) => b.ipv4({ src: s, dst: d }).tcp({ sport: 40001, dport: 443, flags: 'A' }).payload(100)],
  ['icmp echo', (b, s, d) => b.ipv4({ src: s, dst: d }).icmp({ type: 8, id: 1, seq: 2 }).payload(56)],
  ['options, udp/53', (b, s, d) => b.ipv4({ src: s, dst: d, options: [0x94, 4, 0, 0, 1, 1, 1, 0] }).udp({ sport: 1, dport: 53 }).payload(12)],
  ['first fragment, udp/53', (b, s, d) => b.ipv4({ src: s, dst: d, id: 77, mf: true }).udp({ sport: 9, dport: 53, length: 1000 }).payload(64)],
  ['later fragment', (b, s, d) => b.ipv4({ src: s, dst: d, id: 77, fragOffset: 9, protocol: IPPROTO.UDP }).payload(64)],
  ['orphan fragment', (b, s, d) => b.ipv4({ src: s, dst: d, id: 4242, fragOffset: 100, protocol: IPPROTO.TCP }).payload(40)],
  ['protocol 253', (b, s, d) => b.ipv4({ src: s, dst: d }).payload(20)],
];
const V6: [string, L3][] = [
  ['udp/53', (b, s, d) => b.ipv6({ src: s, dst: d }).udp({ sport: 5353, dport: 53 }).payload(30)],
  ['tcp syn/443', (b, s, d) => b.ipv6({ src: s, dst: d }).tcp({ sport: 40000, dport: 443, flags: 'S' })],
  ['icmpv6 echo', (b, s, d) => b.ipv6({ src: s, dst: d }).icmpv6({ type: 128 }).payload(16)],
  ['hop-by-hop, udp/53', (b, s, d) => b.ipv6({ src: s, dst: d }).hopByHop().udp({ sport: 1, dport: 53 }).payload(8)],
  ['hbh, routing, dstopts, tcp/80', (b, s, d) => b.ipv6({ src: s, dst: d }).hopByHop().routing({ addresses: ['2001:db8::5'] }).destOpts().tcp({ sport: 2, dport: 80, flags: 'S' })],
  ['first fragment, udp/53', (b, s, d) => b.ipv6({ src: s, dst: d }).fragment6({ m: true, id: 99 }).udp({ sport: 3, dport: 53, length: 900 }).payload(40)],
  ['later fragment', (b, s, d) => b.ipv6({ src: s, dst: d }).fragment6({ offset: 6, id: 99, next: IPPROTO.UDP }).payload(40)],
  ['atomic fragment, tcp/443', (b, s, d) => b.ipv6({ src: s, dst: d }).fragment6({ id: 5 }).tcp({ sport: 4, dport: 443, flags: 'SA' })],
  ['ah, udp/123', (b, s, d) => b.ipv6({ src: s, dst: d }).ah().udp({ sport: 5, dport: 123 }).payload(10)],
  ['9 dstopts, udp/53', (b, s, d) => { let x = b.ipv6({ src: s, dst: d }); for (let i = 0; i < 9; i++) x = x.destOpts(); return x.udp({ sport: 6, dport: 53 }); }],
  ['mobility, no next', (b, s, d) => b.ipv6({ src: s, dst: d }).ext6({ type: 135, next: IPPROTO.NONE, data: new Uint8Array(14) })],
];
const L2: [string, (b: PacketBuilder) => PacketBuilder][] = [
  ['', (b) => b],
  ['802.1Q, ', (b) => b.vlan(7)],
  ['QinQ, ', (b) => b.svlan(1).vlan(2)],
  ['0x9100+802.1Q, ', (b) => b.vlan({ vid: 3, tpid: 0x9100 }).vlan(4)],
  ['4 tags, ', (b) => b.svlan(1).vlan(2).vlan(3).vlan(4)],
];

/** The frames mutations start from: every L2 x L3/L4 shape, each with a source taken in turn. */
export function corpus(): Base[] {
  const out: Base[] = [];
  let n4 = 0;
  let n6 = 0;
  const add = (name: string, b: PacketBuilder, family: 0 | 4 | 6): void => {
    const { buf, layers } = b.buildWithLayout();
    const ip = layers.find((l) => l.kind === 'ipv4' || l.kind === 'ipv6');
    out.push({ name, buf, layers, family: ip ? family : 0, ipOff: ip?.offset ?? 0 });
  };
  for (const [l2name, l2] of L2) {
    for (const [name, l3] of V4) {
      const src = V4_SOURCES[n4 % V4_SOURCES.length]!;
      const dst = V4_DSTS[n4++ % V4_DSTS.length]!;
      add(`${l2name}IPv4 ${name} from ${src}`, l3(l2(pkt().eth()), src, dst), 4);
    }
    for (const [name, l3] of V6) {
      const src = V6_SOURCES[n6 % V6_SOURCES.length]!;
      const dst = V6_DSTS[n6++ % V6_DSTS.length]!;
      add(`${l2name}IPv6 ${name} from ${src}`, l3(l2(pkt().eth()), src, dst), 6);
    }
  }
  // Five tags: VLAN_DEPTH before any IP header is read.
  add('5 tags, IPv4 udp/53', pkt().eth().svlan(1).vlan(2).vlan(3).vlan(4).vlan(5).ipv4({ src: '192.0.2.1', dst: '192.0.2.200' }).udp({ sport: 1, dport: 53 }), 0);
  add('ARP', pkt().eth({ dst: 'ff:ff:ff:ff:ff:ff' }).arp({ spa: '192.0.2.1', tpa: '192.0.2.200' }), 0);
  add('LLDP', pkt().eth({ dst: '01:80:c2:00:00:0e', type: ETH_P.LLDP }).payload(40), 0);
  add('802.1Q, ARP', pkt().eth().vlan(9).arp({ spa: '192.0.2.2', tpa: '192.0.2.200' }), 0);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Mutators

export interface Frame {
  index: number;
  base: Base;
  buf: Buffer;
  /** What was done to the base frame, in order. */
  muts: string[];
}

const INTERESTING8 = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x40, 0x45, 0x60, 0x4f, 0x46, 0x3f];
const INTERESTING16 = [0x8100, 0x88a8, 0x9100, 0x0800, 0x86dd, 0x0806, 0x0000, 0xffff, 0x0001, 0x7fff, 0x8000];
const PROTOS = [0, 1, 6, 17, 43, 44, 50, 51, 58, 59, 60, 135, 253, 255];
const MAX_FRAME = 1600;

/** Offsets of the length fields of a frame's layers (where a lie is told): [offset, bytes, name]. */
function lengthFields(layers: LayerInfo[]): [number, 1 | 2 | 0.5 | -0.5, string][] {
  const out: [number, 1 | 2 | 0.5 | -0.5, string][] = [];
  for (const l of layers) {
    if (l.kind === 'ipv4') out.push([l.offset + 2, 2, 'ipv4 total length'], [l.offset, -0.5, 'ipv4 ihl'], [l.offset + 9, 1, 'ipv4 protocol']);
    else if (l.kind === 'ipv6') out.push([l.offset + 4, 2, 'ipv6 payload length'], [l.offset + 6, 1, 'ipv6 next header']);
    else if (['hopbyhop', 'dstopts', 'routing', 'ah'].includes(l.kind) || l.kind.startsWith('ext6')) out.push([l.offset + 1, 1, `${l.kind} length`], [l.offset, 1, `${l.kind} next header`]);
    else if (l.kind === 'fragment') out.push([l.offset + 2, 2, 'fragment offset'], [l.offset, 1, 'fragment next header']);
    else if (l.kind === 'udp') out.push([l.offset + 4, 2, 'udp length']);
    else if (l.kind === 'tcp') out.push([l.offset + 12, 0.5, 'tcp data offset']);
    else if (l.kind === 'vlan') out.push([l.offset + 2, 2, 'vlan inner type']);
    else if (l.kind === 'eth') out.push([l.offset + 12, 2, 'ethertype']);
  }
  return out;
}

/** Where the headers end (mutations favour them: that is where the parser reads). */
function headerEnd(b: Base): number {
  const last = [...b.layers].reverse().find((l) => l.kind !== 'payload' && l.kind !== 'raw');
  return last ? last.offset + last.length : b.buf.length;
}

/** Frame i of seed `seed`: a corpus frame, mostly mutated. */
export function makeFrame(seed: number, index: number, bases: Base[]): Frame {
  const r = rng(frameSeed(seed, index));
  const int = (n: number): number => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const base = pick(bases);
  let buf = Buffer.from(base.buf);
  const muts: string[] = [];
  if (r() < 0.08) return { index, base, buf, muts: ['none'] };

  const hdrEnd = headerEnd(base);
  const at = (): number => (r() < 0.8 ? int(Math.min(buf.length, hdrEnd + 4)) : int(buf.length));
  // A splice first (it moves what follows), then a lie in a length field (by the base's layout),
  // then flips and overwrites, then a cut.
  if (r() < 0.25) {
    const other = pick(bases);
    const mine = base.layers.filter((l) => l.kind !== 'eth');
    const theirs = other.layers.filter((l) => l.kind !== 'eth');
    if (mine.length && theirs.length) {
      const a = pick(mine);
      const b = pick(theirs);
      const piece = other.buf.subarray(b.offset, b.offset + b.length);
      const how = int(4);
      const head = buf.subarray(0, a.offset);
      const tail = buf.subarray(a.offset + a.length);
      if (how === 0) buf = Buffer.concat([head, piece, tail]);
      else if (how === 1) buf = Buffer.concat([head, piece, buf.subarray(a.offset)]);
      else if (how === 2) buf = Buffer.concat([head, tail]);
      else buf = Buffer.concat([head, buf.subarray(a.offset, a.offset + a.length), buf.subarray(a.offset)]);
      muts.push(`splice ${['replace', 'insert', 'delete', 'repeat'][how]} ${a.kind}@${a.offset}${how < 2 ? ` with ${b.kind} of "${other.name}"` : ''}`);
    }
  }
  if (!muts.length && r() < 0.4) {
    const fields = lengthFields(base.layers).filter(([o]) => o < buf.length - 1);
    if (fields.length) {
      const [o, size, name] = pick(fields);
      if (size === 2) {
        const cur = buf.readUInt16BE(o);
        const v = pick([0, 1, cur - 1, cur + 1, cur + 8, cur - 8, cur * 2, 0xffff, int(0x10000), pick(INTERESTING16)]) & 0xffff;
        buf.writeUInt16BE(v, o);
        muts.push(`${name} ${cur} -> ${v}`);
      } else if (size === 1) {
        const cur = buf[o]!;
        const v = pick([0, 1, cur - 1, cur + 1, 0xff, int(256), pick(PROTOS)]) & 0xff;
        buf[o] = v;
        muts.push(`${name} ${cur} -> ${v}`);
      } else {
        // A nibble: IHL is the low one (-0.5), TCP's data offset the high one (0.5).
        const low = size < 0;
        const cur = low ? buf[o]! & 15 : buf[o]! >> 4;
        const v = pick([0, 1, 4, 5, 6, 15, cur + 1, cur - 1, int(16)]) & 15;
        buf[o] = low ? (buf[o]! & 0xf0) | v : (buf[o]! & 0x0f) | (v << 4);
        muts.push(`${name} ${cur} -> ${v}`);
      }
    }
  }
  const rounds = muts.length ? int(2) : 1 + int(3);
  for (let k = 0; k < rounds && buf.length; k++) {
    if (r() < 0.55) {
      const flips = 1 + int(3);
      const where: number[] = [];
      for (let f = 0; f < flips; f++) {
        const o = at();
        const bit = int(8);
        buf[o]! ^= 1 << bit;
        where.push(o * 8 + bit);
      }
      muts.push(`flip bits ${where.join(',')}`);
    } else {
      const o = at();
      if (r() < 0.4 && o + 1 < buf.length) {
        const v = pick(INTERESTING16);
        buf.writeUInt16BE(v, o);
        muts.push(`write 0x${v.toString(16)} at ${o}`);
      } else {
        const n = 1 + int(4);
        const vals: number[] = [];
        for (let j = 0; j < n && o + j < buf.length; j++) {
          const v = r() < 0.5 ? pick(INTERESTING8) : int(256);
          buf[o + j] = v;
          vals.push(v);
        }
        muts.push(`write ${vals.map((v) => v.toString(16).padStart(2, '0')).join('')} at ${o}`);
      }
    }
  }
  if (r() < 0.3) {
    // Mostly inside the headers; now and then below 14 bytes (the kernel must refuse those).
    const n = r() < 0.03 ? int(14) : 14 + int(Math.max(1, Math.min(buf.length, hdrEnd + 8) - 14));
    if (n < buf.length) {
      buf = buf.subarray(0, n);
      muts.push(`cut to ${n}`);
    }
  }
  if (buf.length > MAX_FRAME) buf = buf.subarray(0, MAX_FRAME);
  return { index, base, buf: Buffer.from(buf), muts };
}

/**
 * The source address of a frame, when it is certainly readable: the parser finds the source by
 * the ethertype and VLAN tags (bytes 12 up to the IP header), the IP version nibble, and needs the
 * fixed IP header inside the frame; if all of those bytes equal the base frame's, and the source
 * bytes too, then it reads the base frame's source. Conservative: a mutation elsewhere in those
 * bytes (say a VLAN id) makes the source "unknown" here although the parser still reads it.
 */
export function readableSource(f: Frame): { family: 4 | 6; addr: Buffer } | undefined {
  const b = f.base;
  if (!b.family) return undefined;
  const fixed = b.family === 4 ? 20 : 40;
  const at = b.ipOff + (b.family === 4 ? 12 : 8);
  const len = b.family === 4 ? 4 : 16;
  if (f.buf.length < b.ipOff + fixed) return undefined;
  if (!f.buf.subarray(12, b.ipOff).equals(b.buf.subarray(12, b.ipOff))) return undefined;
  if (f.buf[b.ipOff]! >> 4 !== b.buf[b.ipOff]! >> 4) return undefined;
  if (!f.buf.subarray(at, at + len).equals(b.buf.subarray(at, at + len))) return undefined;
  const addr = Buffer.alloc(16);
  b.buf.copy(addr, 0, at, at + len);
  return { family: b.family, addr };
}

// ---------------------------------------------------------------------------------------------
// The policy under test

/** Token buckets only: with a fixed clock, a key passes at most its burst. */
export const RULES: RuleSpec[] = [
  { id: 0, name: 'default', alg: 'token', pps: 2, ppsBurst: 2, aggregate: null },
  { id: 1, name: 'dns', alg: 'token', proto: 17, dport: [53, 53], pps: 5, ppsBurst: 4, aggregate: null },
  { id: 2, name: 'web syn', alg: 'token', proto: 6, dport: [[80, 80], [443, 443]], syn: true, pps: 4, ppsBurst: 3, aggregate: null },
  { id: 3, name: 'icmp', alg: 'token', proto: 1, pps: 1, ppsBurst: 1, aggregate: null },
  { id: 4, name: 'icmpv6', alg: 'token', proto: 58, pps: 10, ppsBurst: 6, aggregate: null },
  { id: 5, name: 'net dns', alg: 'token', src: ['198.51.100.0/24', '2001:db8:100::/48'], proto: 17, dport: [53, 53], pps: 20, ppsBurst: 7, aggregate: null },
  { id: 6, name: 'net', alg: 'token', src: ['198.51.100.0/24', '2001:db8:100::/48'], pps: 3, ppsBurst: 3, aggregate: null },
  { id: 7, name: 'to dst', alg: 'token', dst: ['203.0.113.128/25', '2001:db8:d57::/48'], pps: 8, ppsBurst: 5, aggregate: null },
];
export const POLICY: PolicySpec = { rules: RULES };
export const LISTS: Lists = { mgmt: ['203.0.113.0/28'], deny: ['192.0.2.64/27', '2001:db8:dead::/48'], allow: ['192.0.2.96/27', '2001:db8:a110::/48'] };

interface RuleParams { id: number; burst: bigint; inc: bigint; cap: bigint; d: Derived; src: Prefix[] }
const PARAMS: Map<number, RuleParams> = new Map(RULES.map((r) => {
  // sl_params_derive (src/limiter/models.ts): time in quanta of 2^-shift ns; the cost of one packet
  // and the bucket's depth in quanta, the cost rounded up.
  const d = derive(paramsOf(BigInt(r.pps as number), BigInt(r.ppsBurst as number), Alg.TOKEN, 1000));
  return [r.id, { id: r.id, burst: BigInt(r.ppsBurst as number), inc: d.inc1, cap: d.limit, d, src: (r.src ?? []).map(parsePrefix) }];
}));
const LIST_PREFIXES = (Object.keys(LISTS) as (keyof Lists)[]).map((name) => [name, LISTS[name].map(parsePrefix)] as const);

/** The list that decides a source (management, then deny, then allow), if any. */
function listOf(s: { family: 4 | 6; addr: Buffer }): keyof Lists | undefined {
  const p: Prefix = { family: s.family, plen: s.family === 4 ? 32 : 128, addr: s.addr };
  for (const [name, pfx] of LIST_PREFIXES) if (pfx.some((x) => covers(x, p))) return name;
  return undefined;
}

const KEY_V4 = 32;
const KEY_V6 = 64;
function keyAddr(s: { family: 4 | 6; addr: Buffer }): string {
  const a = Buffer.from(s.addr);
  const plen = s.family === 4 ? KEY_V4 : KEY_V6;
  for (let i = 0; i < 16; i++) a[i]! &= (0xff << (8 - Math.max(0, Math.min(8, plen - i * 8)))) & 0xff;
  return `${s.family}/${a.toString('hex')}`;
}

// ---------------------------------------------------------------------------------------------
// Reasons

const MALFORMED: number[] = [Reason.TRUNCATED, Reason.BAD_IPV4, Reason.BAD_IPV6, Reason.VLAN_DEPTH];
const RULE_PASS: number[] = [Reason.PASS];
const RULE_DROP: number[] = [Reason.LIMIT, Reason.CONTENDED];
const LIST_REASON: Record<keyof Lists, number> = { mgmt: Reason.MGMT, deny: Reason.DENYLIST, allow: Reason.ALLOWLIST };
const NAME = Object.fromEntries(Object.entries(Reason).map(([k, v]) => [v, k])) as Record<number, string>;

/** Reasons of the global slot that are verdicts, by verdict, under malformed_drop md. */
function globalVerdicts(md: boolean): { pass: number[]; drop: number[]; notes: number[] } {
  return {
    pass: [Reason.NON_IP, Reason.MGMT, Reason.ALLOWLIST, ...(md ? [] : MALFORMED)],
    drop: [Reason.DENYLIST, Reason.TINY_FRAG, ...(md ? MALFORMED : [])],
    // TINY_FRAG is always dropped, so never a note; with malformed_drop nothing malformed is.
    notes: [Reason.EXT_CHAIN, Reason.FRAG_ORPHAN, Reason.UNCERTAIN, ...(md ? [] : MALFORMED)],
  };
}

const sum = (xs: bigint[], idx: number[]): bigint => idx.reduce((s, i) => s + xs[i]!, 0n);

function sub(a: Counters, b: Counters): Counters {
  const d = (x: bigint[], y: bigint[]): bigint[] => x.map((v, i) => v - y[i]!);
  return { packets: d(a.packets, b.packets), bytes: d(a.bytes, b.bytes), reason_packets: d(a.reason_packets, b.reason_packets), reason_bytes: d(a.reason_bytes, b.reason_bytes), new_states: a.new_states - b.new_states };
}

function show(c: Counters): string {
  const rs = c.reason_packets.map((n, r) => (n ? `${NAME[r]}:${n}/${c.reason_bytes[r]}B` : '')).filter(Boolean);
  return `pass ${c.packets[0]}/${c.bytes[0]}B drop ${c.packets[1]}/${c.bytes[1]}B [${rs.join(' ')}]`;
}

// ---------------------------------------------------------------------------------------------
// The run

export interface FuzzOptions {
  frames: number;
  seed: number;
  /** Frames per round: the clock is fixed within one, and state is checked and cleared after it. */
  roundFrames?: number;
  /** One frame in this many is run alone and checked exactly (default 1024). */
  probeEvery?: number;
  /** Chunks of test runs in flight (default 4). */
  concurrency?: number;
  /** Only this frame, alone (a replay). */
  only?: number;
  /**
   * The kernel's clock instead of the test clock (for the production object, which has none):
   * buckets refill as the run goes, so the checks that need a fixed clock (state words, passes
   * per source) are left out; every other invariant holds.
   */
  kernelClock?: boolean;
  /** The command that replays a run, for failure messages (default `npm run fuzz --`). */
  command?: string;
  log?: (line: string) => void;
}

export interface FuzzReport {
  frames: number;
  refused: number;
  probes: number;
  /** Copies of frames with their padding replaced, run too (not counted in frames). */
  padded: number;
  readable: number;
  passed: number;
  seconds: number;
  framesPerSecond: number;
  reasons: Record<string, number>;
  keys: number;
}

export class FuzzFailure extends Error {
  constructor(invariant: string, readonly seed: number, readonly frame: Frame | undefined, detail: string, replay: string) {
    const lines = [`fuzz invariant failed: ${invariant}`, `  seed ${seed}${frame ? `, frame ${frame.index}` : ''}`, `  ${detail}`];
    if (frame) {
      lines.push(`  base: ${frame.base.name}`, `  mutations: ${frame.muts.join('; ')}`, `  frame (${frame.buf.length} bytes): ${frame.buf.toString('hex')}`);
    }
    lines.push(`  replay: ${replay}`);
    super(lines.join('\n'));
    this.name = 'FuzzFailure';
  }
}

interface Pending { frame: Frame; src: { family: 4 | 6; addr: Buffer } | undefined; list: keyof Lists | undefined }

export class Fuzzer {
  private readonly bases = corpus();
  private readonly slots: number[];
  private now = 0n;
  private md = false;
  private readonly report: FuzzReport = { frames: 0, refused: 0, probes: 0, padded: 0, readable: 0, passed: 0, seconds: 0, framesPerSecond: 0, reasons: {}, keys: 0 };
  /** Per readable source (key address): its passes this round. */
  private knownPasses = new Map<string, number>();
  private roundStart: Counters[] = [];
  private roundFirst = 0;

  constructor(private readonly dp: TestDatapath, private readonly o: FuzzOptions) {
    this.slots = [...RULES.map((r) => r.id), dp.limiter.maxRules];
  }

  /** Load the policy and lists, and settings under which every invariant is exact. */
  setUp(): void {
    this.dp.limiter.applyPolicy(POLICY);
    this.dp.limiter.applyLists(LISTS);
    this.dp.limiter.setMalformedDrop(false);
    this.dp.limiter.setConfig({ events_off: 1 });
  }

  private replay(frame?: Frame): string {
    const cmd = this.o.command ?? 'npm run fuzz --';
    const whole = `${cmd} --seed ${this.o.seed} --frames ${this.o.frames}`;
    return frame ? `${whole}   (this frame alone: ${cmd} --seed ${this.o.seed} --frame ${frame.index})` : whole;
  }

  private fail(invariant: string, frame: Frame | undefined, detail: string): never {
    throw new FuzzFailure(invariant, this.o.seed, frame, detail, this.replay(frame));
  }

  private read(): Counters[] {
    const m = this.dp.limiter.maps.stats_map;
    return this.slots.map((s) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(s);
      return m.lookupPerCpu(k).map((b) => decodeCounters(b.subarray(0, SL_COUNTERS_SIZE))).reduce(addCounters);
    });
  }

  private startRound(round: number): void {
    this.now = 1_000_000_000n + BigInt(round) * 1_000_000_000_000n;
    this.md = round % 2 === 1;
    if (!this.o.kernelClock) this.dp.setNow(this.now);
    this.dp.limiter.setMalformedDrop(this.md);
    this.knownPasses.clear();
    this.roundStart = this.read();
  }

  async run(): Promise<FuzzReport> {
    const t0 = process.hrtime.bigint();
    const log = this.o.log ?? (() => {});
    this.setUp();
    const per = this.o.roundFrames ?? 100_000;
    if (this.o.only !== undefined) {
      // The frame's own round: its clock and malformed_drop, on a map of its own.
      const round = Math.floor(this.o.only / per);
      this.startRound(round);
      this.roundFirst = this.o.only;
      const frame = makeFrame(this.o.seed, this.o.only, this.bases);
      log(`frame ${frame.index}: ${frame.base.name}; ${frame.muts.join('; ')}\n  ${frame.buf.toString('hex')}`);
      await this.probe(this.pending(frame));
      this.endRound(round);
      return this.finish(t0);
    }
    const probeEvery = this.o.probeEvery ?? 1024;
    const batch = 2048;
    for (let round = 0, i = 0; i < this.o.frames; round++) {
      this.startRound(round);
      this.roundFirst = i;
      const end = Math.min(this.o.frames, i + per);
      const known: Pending[] = [];
      const paddable: Pending[] = [];
      const unknown: Pending[] = [];
      for (; i < end; i++) {
        const p = this.pending(makeFrame(this.o.seed, i, this.bases));
        if (p.frame.buf.length < 14) {
          await this.refused(p.frame);
          continue;
        }
        if (probeEvery > 0 && i % probeEvery === probeEvery - 1) {
          await this.probe(p);
          continue;
        }
        const q = !p.src ? unknown : this.paddingFrom(p) === undefined ? known : paddable;
        q.push(p);
        if (q.length === batch) {
          if (q === paddable) await this.runPadded(q.splice(0));
          else await this.runBatch(q.splice(0), q === known);
        }
      }
      await this.runPadded(paddable.splice(0));
      await this.runBatch(known.splice(0), true);
      await this.runBatch(unknown.splice(0), false);
      this.endRound(round);
      log(`round ${round}: frames ${this.roundFirst}..${end - 1}, malformed_drop ${this.md ? 1 : 0}, ${((Number(process.hrtime.bigint() - t0) / 1e9)).toFixed(1)} s`);
    }
    return this.finish(t0);
  }

  private finish(t0: bigint): FuzzReport {
    this.report.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    this.report.framesPerSecond = Math.round(this.report.frames / this.report.seconds);
    return this.report;
  }

  private pending(frame: Frame): Pending {
    const src = readableSource(frame);
    return { frame, src, list: src && listOf(src) };
  }

  private async refused(frame: Frame): Promise<void> {
    try {
      await this.dp.prog.run(frame.buf);
    } catch (e) {
      if ((e as { errnoName?: string }).errnoName === 'EINVAL') {
        this.report.refused++;
        return;
      }
      this.fail('a frame shorter than Ethernet is refused with EINVAL', frame, `got ${String(e)}`);
    }
    this.fail('a frame shorter than Ethernet is refused with EINVAL', frame, 'the kernel ran it');
  }

  /** One test run alone; the verdict, after checking that it is one. */
  private async runOne(frame: Frame): Promise<0 | 1> {
    let retval: number;
    try {
      retval = (await this.dp.prog.run(frame.buf)).retval;
    } catch (e) {
      this.fail('every frame of 14 bytes or more runs', frame, `BPF_PROG_TEST_RUN failed: ${String(e)}`);
    }
    return this.verdict(frame, retval);
  }

  /** A run's return value (or -errno, from a batch) as a verdict, after checking that it is one. */
  private verdict(frame: Frame, retval: number, count = true): 0 | 1 {
    if (retval < 0) this.fail('every frame of 14 bytes or more runs', frame, `BPF_PROG_TEST_RUN failed: errno ${-retval}`);
    if (retval !== XDP_PASS && retval !== XDP_DROP) this.fail('the verdict is XDP_PASS or XDP_DROP', frame, `retval ${retval}`);
    if (count) this.report.frames++;
    return retval === XDP_PASS ? 0 : 1;
  }

  /** Tally a verdict; a readable source's passes, also of a padded copy (count false). */
  private noteVerdict(p: Pending, v: 0 | 1, count = true): void {
    if (v === 0 && count) this.report.passed++;
    if (p.src) {
      if (count) this.report.readable++;
      if (v === 0 && !p.list) {
        const k = keyAddr(p.src);
        this.knownPasses.set(k, (this.knownPasses.get(k) ?? 0) + 1);
      }
    }
  }

  /**
   * A batch's counter deltas. count: whether its frames count as frames sent (padded copies do
   * not); inFlight: chunks run at once (1: in order, on one CPU at a time).
   */
  private async runBatch(batch: Pending[], known: boolean, count = true, inFlight = this.o.concurrency ?? 4): Promise<Counters[]> {
    if (!batch.length) return [];
    const before = this.read();
    // Chunks of frames, each one job of test runs (Program.runBatch), several in flight so that
    // both CPUs run the program on the same maps.
    const verdicts = new Array<0 | 1>(batch.length);
    const chunk = 128;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < batch.length) {
        const from = next;
        next += chunk;
        const part = batch.slice(from, from + chunk);
        const rets = await this.dp.prog.runBatch(part.map((p) => p.frame.buf));
        part.forEach((p, j) => { verdicts[from + j] = this.verdict(p.frame, rets[j]!, count); });
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
    const d = this.read().map((c, s) => sub(c, before[s]!));
    const problem = this.checkBatch(batch, verdicts, d, known);
    if (problem) {
      // Find the frame: run the batch again one by one, each checked exactly.
      for (const p of batch) await this.probe(p);
      this.fail(problem, undefined, `in a batch of ${batch.length} ${known ? 'readable-source' : 'other'} frames (indices ${batch.map((p) => p.frame.index).slice(0, 8).join(', ')}, …) that pass one by one; counter deltas: ${d.map((c, s) => `slot ${this.slots[s]}: ${show(c)}`).join('; ')}`);
    }
    batch.forEach((p, j) => this.noteVerdict(p, verdicts[j]!, count));
    return d;
  }

  /**
   * A batch of readable-source frames, then the same frames with their padding replaced (see
   * padding()): each slot must have decided as many of them, for the same reasons (a rule's PASS,
   * LIMIT and CONTENDED alike, since the copies find their keys charged). A later fragment is
   * decided by what its first fragment left in sl_frags, so both batches start from an empty
   * sl_frags and run in order (a copy has its original's fragment key: source, destination, id
   * and protocol are in the fixed IP header, which it keeps).
   */
  private async runPadded(batch: Pending[]): Promise<void> {
    if (!batch.length) return;
    this.clearFrags();
    const d0 = await this.runBatch(batch, true, true, 1);
    const copies = batch.map((p) => ({ ...p, frame: this.padded(p.frame, this.paddingFrom(p)!, [0x00, 0x35]) }));
    this.clearFrags();
    const d1 = await this.runBatch(copies, true, false, 1);
    this.report.padded += copies.length;
    const tally = (d: Counters[]): string => d.map((c, s) => (s < d.length - 1 ? `${c.packets[0]! + c.packets[1]!}` : c.reason_packets.join(','))).join(' ');
    if (tally(d0) !== tally(d1)) {
      for (const p of batch) await this.probe(p);
      this.fail('bytes past the IP length and fields the data path does not read do not change how a frame is decided', undefined, `a batch of ${batch.length} readable-source frames (indices ${batch.map((p) => p.frame.index).slice(0, 8).join(', ')}, …) and their padded copies were decided differently, but each frame alone alike; rule slots, then global reasons: ${tally(d0)} / ${tally(d1)}`);
    }
  }

  private clearFrags(): void {
    const m = this.dp.coll.maps.get('sl_frags')!;
    const keys: Buffer[] = [];
    for (const chunk of m.lookupBatch({ batchSize: 4096 })) for (const [k] of chunk) keys.push(Buffer.from(k));
    for (let j = 0; j < keys.length; j += 4096) m.deleteBatch(keys.slice(j, j + 4096));
  }

  /** Where a readable-source frame's padding starts (past its IP length and its fixed IP header),
   *  if the frame holds its IP length; undefined for an IPv6 payload length of 0 (a jumbogram:
   *  its payload is the rest of the frame). */
  private paddingFrom(p: Pending): number | undefined {
    const f = p.frame;
    const b = f.base;
    if (!p.src || f.buf.length + 64 > MAX_FRAME) return undefined;
    const ipLen = b.family === 4 ? f.buf.readUInt16BE(b.ipOff + 2) : 40 + f.buf.readUInt16BE(b.ipOff + 4);
    if ((b.family === 6 && ipLen === 40) || f.buf.length < b.ipOff + ipLen) return undefined;
    // The fixed IP header is read whatever its length field says (a length shorter than it is
    // BAD_IPV4, and the source is still charged): only what lies past both is padding.
    return b.ipOff + Math.max(ipLen, b.family === 4 ? 20 : 40);
  }

  /**
   * The frame with every byte from `keep` replaced by `fill`, repeated, and 64 more of them; and
   * every field the data path does not read inverted: the MAC addresses; IPv4 TOS, TTL, header
   * checksum and options (skipped, not read); IPv6 traffic class, flow label and hop limit. (Not
   * the IPv4 id: it names a fragment's datagram.)
   */
  private padded(f: Frame, keep: number, fill: number[]): Frame {
    const junk = Buffer.alloc(f.buf.length - keep + 64);
    for (let i = 0; i < junk.length; i++) junk[i] = fill[(keep + i) % fill.length]!;
    const buf = Buffer.concat([f.buf.subarray(0, keep), junk]);
    const o = f.base.ipOff;
    const flip = (from: number, to: number, mask = 0xff): void => {
      for (let i = from; i < Math.min(to, keep); i++) buf[i]! ^= mask;
    };
    flip(0, 12);
    if (f.base.family === 4) {
      flip(o + 1, o + 2, 0xfc);
      flip(o + 8, o + 9);
      flip(o + 10, o + 12);
      flip(o + 20, o + (buf[o]! & 15) * 4);
    } else {
      flip(o, o + 1, 0x0f);
      flip(o + 1, o + 4);
      flip(o + 7, o + 8);
    }
    return { ...f, buf, muts: [...f.muts, `bytes from ${keep} (past the IP length) and 64 more: ${fill.map((x) => x.toString(16).padStart(2, '0')).join('')}…; unread fields inverted`] };
  }

  /** The batch's invariants; a description of the first one broken, or undefined. */
  private checkBatch(batch: Pending[], verdicts: (0 | 1)[], d: Counters[], known: boolean): string | undefined {
    const n = BigInt(batch.length);
    const want = { packets: [0n, 0n], bytes: [0n, 0n] };
    batch.forEach((p, j) => {
      want.packets[verdicts[j]!]! += 1n;
      want.bytes[verdicts[j]!]! += BigInt(p.frame.buf.length);
    });
    const tot = d.reduce(addCounters);
    for (const v of [0, 1]) {
      if (tot.packets[v] !== want.packets[v] || tot.bytes[v] !== want.bytes[v]) {
        return `the counters add up to the frames sent: ${['pass', 'drop'][v]} ${tot.packets[v]} packets / ${tot.bytes[v]} bytes counted, ${want.packets[v]} / ${want.bytes[v]} returned`;
      }
    }
    const g = d[d.length - 1]!;
    const gv = globalVerdicts(this.md);
    let rulePackets = 0n;
    for (let s = 0; s < d.length - 1; s++) {
      const c = d[s]!;
      rulePackets += c.packets[0]! + c.packets[1]!;
      const other = c.reason_packets.findIndex((x, r) => x !== 0n && !RULE_PASS.includes(r) && !RULE_DROP.includes(r));
      if (other >= 0) return `rule ${this.slots[s]} counts only PASS, LIMIT or CONTENDED here, got ${show(c)}`;
      if (sum(c.reason_packets, RULE_PASS) !== c.packets[0] || sum(c.reason_packets, RULE_DROP) !== c.packets[1] ||
          sum(c.reason_bytes, RULE_PASS) !== c.bytes[0] || sum(c.reason_bytes, RULE_DROP) !== c.bytes[1]) {
        return `each verdict of rule ${this.slots[s]} has one reason of its kind: ${show(c)}`;
      }
    }
    const allowed = new Set([...gv.pass, ...gv.drop, ...gv.notes]);
    const other = g.reason_packets.findIndex((x, r) => x !== 0n && !allowed.has(r));
    if (other >= 0) return `the global slot counts no ${NAME[other]} here: ${show(g)}`;
    // Verdict reasons of the global slot. A malformed reason is a verdict (no source read) or a
    // note (source read): without malformed_drop, the malformed verdicts are the passes that no
    // other global reason accounts for.
    const strictPass = [Reason.NON_IP, Reason.MGMT, Reason.ALLOWLIST];
    let malformedVerdicts = 0n;
    let malformedVerdictBytes = 0n;
    if (this.md) {
      if (sum(g.reason_packets, gv.pass) !== g.packets[0] || sum(g.reason_packets, gv.drop) !== g.packets[1] ||
          sum(g.reason_bytes, gv.pass) !== g.bytes[0] || sum(g.reason_bytes, gv.drop) !== g.bytes[1]) {
        return `each global verdict has one reason of its kind (malformed_drop 1): ${show(g)}`;
      }
    } else {
      if (sum(g.reason_packets, gv.drop) !== g.packets[1] || sum(g.reason_bytes, gv.drop) !== g.bytes[1]) {
        return `each global drop is DENYLIST or TINY_FRAG (malformed_drop 0): ${show(g)}`;
      }
      malformedVerdicts = g.packets[0]! - sum(g.reason_packets, strictPass);
      malformedVerdictBytes = g.bytes[0]! - sum(g.reason_bytes, strictPass);
      if (malformedVerdicts < 0n || malformedVerdicts > sum(g.reason_packets, MALFORMED) ||
          malformedVerdictBytes < 0n || malformedVerdictBytes > sum(g.reason_bytes, MALFORMED)) {
        return `each global pass has one reason of its kind (malformed_drop 0): ${show(g)}`;
      }
    }
    const notes = (this.md ? 0n : sum(g.reason_packets, MALFORMED) - malformedVerdicts) + g.reason_packets[Reason.EXT_CHAIN]! + g.reason_packets[Reason.FRAG_ORPHAN]!;
    const uncertain = g.reason_packets[Reason.UNCERTAIN]!;
    if (notes > uncertain || uncertain > rulePackets) {
      return `a frame has at most one note (malformed with a source, EXT_CHAIN, FRAG_ORPHAN), each comes with UNCERTAIN, and UNCERTAIN frames are charged to a rule: ${notes} notes, ${uncertain} UNCERTAIN, ${rulePackets} charged to rules; global ${show(g)}`;
    }
    if (known) {
      // Every frame here has a readable source: a list decides it, or TINY_FRAG, or (with
      // malformed_drop) a malformed reason; every other is charged to a rule.
      const lists = { mgmt: 0n, deny: 0n, allow: 0n };
      for (const p of batch) if (p.list) lists[p.list]++;
      for (const name of Object.keys(lists) as (keyof Lists)[]) {
        if (g.reason_packets[LIST_REASON[name]] !== lists[name]) return `a readable source in the ${name} list gets ${NAME[LIST_REASON[name]]}: ${lists[name]} sent, ${show(g)}`;
      }
      const global = lists.mgmt + lists.deny + lists.allow + g.reason_packets[Reason.TINY_FRAG]! + (this.md ? sum(g.reason_packets, MALFORMED) : 0n);
      if (g.packets[0]! + g.packets[1]! !== global || rulePackets !== n - global) {
        return `a frame with a readable source is charged to a rule (or decided by a list, TINY_FRAG${this.md ? ', malformed_drop' : ''}): ${rulePackets} of ${n} charged to rules, ${global} accounted globally; global ${show(g)}`;
      }
    }
    return undefined;
  }

  /** Run one frame alone and check everything about it exactly; then with padding after it. */
  private async probe(p: Pending): Promise<void> {
    const d = await this.probeExact(p);
    await this.padding(p, d);
  }

  /** How a frame was decided, from its counter deltas: the slot, and the reasons that moved (a
   *  rule's PASS, LIMIT and CONTENDED alike: which of them depends on the key's state). */
  private decided(d: Counters[]): string {
    return d.flatMap((c, s) => c.reason_packets.flatMap((n, r) => (n ? [`${this.slots[s]}:${[...RULE_PASS, ...RULE_DROP].includes(r) && s < d.length - 1 ? 'charged' : NAME[r]}`] : []))).join(' ');
  }

  /**
   * Bytes past the IP length (Ethernet padding, a trailer) and fields the data path does not read
   * never change how a frame is decided: the frame, and the frame with every byte past its IP
   * length replaced by zeros or by 0x0035 (port 53 wherever a port is read) and 64 more of them and
   * its unread fields inverted (padded()), are decided alike (see paddingFrom for which frames).
   */
  private async padding(p: Pending, d0: Counters[]): Promise<void> {
    const keep = this.paddingFrom(p);
    if (keep === undefined) return;
    const want = this.decided(d0);
    for (const fill of [[0], [0x00, 0x35]]) {
      const padded = this.padded(p.frame, keep, fill);
      const before = this.read();
      this.verdict(padded, (await this.dp.prog.runBatch([padded.buf]))[0]!, false);
      this.report.padded++;
      const got = this.decided(this.read().map((c, s) => sub(c, before[s]!)));
      if (got !== want) this.fail('bytes past the IP length and fields the data path does not read do not change how a frame is decided', padded, `without them: ${want}; with them: ${got}`);
    }
  }

  private async probeExact(p: Pending): Promise<Counters[]> {
    const f = p.frame;
    const keysBefore = p.src ? this.stateWords(p.src) : undefined;
    const before = this.read();
    const v = await this.runOne(f);
    this.report.probes++;
    const d = this.read().map((c, s) => sub(c, before[s]!));
    const len = BigInt(f.buf.length);
    const fail: (what: string) => never = (what) => this.fail(what, f, `verdict ${['pass', 'drop'][v]}, readable source ${p.src ? keyAddr(p.src) : 'no'}${p.list ? ` (${p.list} list)` : ''}; counter deltas: ${d.map((c, s) => (show(c) === show(sub(c, c)) ? '' : `slot ${this.slots[s]}: ${show(c)}`)).filter(Boolean).join('; ')}`);
    const moved = d.map((c, s) => [s, c.packets[0]! + c.packets[1]!] as const).filter(([, x]) => x !== 0n);
    if (moved.length !== 1 || moved[0]![1] !== 1n) fail('the counters add up to the frames sent: one packet in one slot');
    const s = moved[0]![0];
    const c = d[s]!;
    if (c.packets[v] !== 1n || c.bytes[v] !== len || c.bytes[1 - v] !== 0n) fail('the counted verdict and bytes are the run\'s');
    const global = s === d.length - 1;
    const gv = globalVerdicts(this.md);
    const g = d[d.length - 1]!;
    const reasonsOf = (x: Counters): number[] => x.reason_packets.flatMap((n, r) => (n ? [r] : []));
    for (const [slot, x] of d.entries()) {
      for (const r of reasonsOf(x)) if (x.reason_packets[r] !== 1n || x.reason_bytes[r] !== len) fail(`each reason moves by one frame (slot ${this.slots[slot]}, ${NAME[r]})`);
      if (slot !== s && slot !== d.length - 1 && reasonsOf(x).length) fail('nothing moves in another rule\'s slot');
    }
    if (global) {
      const rs = reasonsOf(g);
      if (rs.length !== 1 || !(v === 0 ? gv.pass : gv.drop).includes(rs[0]!)) fail('a global verdict has exactly one reason, one that goes with it, and no notes');
      if (p.src) {
        const r = rs[0]!;
        const ok = p.list ? r === LIST_REASON[p.list] : r === Reason.TINY_FRAG || (this.md && MALFORMED.includes(r));
        if (!ok) fail('a frame with a readable source is charged to a rule, unless a list, TINY_FRAG or malformed_drop decides');
      }
    } else {
      const rs = reasonsOf(c);
      if (rs.length !== 1 || !(v === 0 ? RULE_PASS : RULE_DROP).includes(rs[0]!)) fail('a rule\'s verdict has exactly one reason, one that goes with it');
      const notes = reasonsOf(g);
      if (!notes.every((r) => gv.notes.includes(r))) fail('only notes move in the global slot of a frame charged to a rule');
      const firm = notes.filter((r) => r !== Reason.UNCERTAIN);
      if (firm.length > 1 || (firm.length && !notes.includes(Reason.UNCERTAIN))) fail('at most one note (malformed with a source, EXT_CHAIN, FRAG_ORPHAN), and it comes with UNCERTAIN');
      if (p.src) {
        if (p.list) fail(`a source in the ${p.list} list is decided by the list`);
        const id = this.slots[s]!;
        const after = this.stateWords(p.src).get(id);
        const was = keysBefore!.get(id);
        const inc = PARAMS.get(id)!.inc;
        if (after === undefined) fail(`a frame with a readable source is charged to a rule keyed by that source: no state for (rule ${id}, ${keyAddr(p.src)})`);
        if (this.o.kernelClock) {
          this.noteVerdict(p, v);
          return d;
        }
        const dv = PARAMS.get(id)!.d;
        const nq = (this.now << dv.shift) & U64;
        const back = was === undefined ? 0n : backlog(was, nq, dv);
        if (v === 0 && after !== ((nq + back + inc) & U64)) fail(`a pass charges its key one packet: state word ${was} -> ${after}, now ${this.now}, cost ${inc} quanta`);
        if (v === 1 && c.reason_packets[Reason.LIMIT] === 1n && (after !== was || back + inc <= PARAMS.get(id)!.cap)) {
          fail(`a drop over the limit leaves its key as it was, full: state word ${was} -> ${after}, now ${this.now}`);
        }
        // Against the rule as written, not the derived bucket: at a fixed clock, a key that has
        // passed fewer than its burst this round has room for one more packet.
        const burst = PARAMS.get(id)!.burst;
        if (v === 1 && c.reason_packets[Reason.LIMIT] === 1n && back / inc < burst) {
          fail(`a stream that conforms to the limit is never dropped: the key (rule ${id}, ${keyAddr(p.src)}) had passed ${back / inc} of its burst of ${burst} this round and was dropped over the limit`);
        }
      }
    }
    this.noteVerdict(p, v);
    return d;
  }

  /** The packet state word of each rule's key for a source. */
  private stateWords(src: { family: 4 | 6; addr: Buffer }): Map<number, bigint> {
    const out = new Map<number, bigint>();
    const addr = Buffer.from(keyAddr(src).slice(2), 'hex');
    for (const r of RULES) {
      const { map, key } = encodeStateKey({ rule_id: r.id, family: src.family, plen: src.family === 4 ? KEY_V4 : KEY_V6, addr });
      const v = this.dp.limiter.maps[map].lookup(key);
      if (v) out.set(r.id, decodeKeyState(v).word);
    }
    return out;
  }

  /** The round's invariants on the state map and the pass counts; then a clean map for the next. */
  private endRound(round: number): void {
    const d = this.read().map((c, s) => sub(c, this.roundStart[s]!));
    const fail: (what: string) => never = (what) => this.fail(what, undefined, `round ${round} (frames from ${this.roundFirst}, clock ${this.now} ns, malformed_drop ${this.md ? 1 : 0})`);
    const charged = new Map<string, bigint>();
    let keys = 0;
    let charges = 0n;
    const all: [BpfMap, Buffer][] = [];
    for (const [m, family] of stateMapsOf(this.dp.limiter.maps)) for (const chunk of m.lookupBatch({ batchSize: 4096 })) {
      for (const [kb, vb] of chunk) {
        keys++;
        all.push([m, Buffer.from(kb)]);
        const k = decodeStateKey(family, kb);
        const st = decodeKeyState(vb);
        const rule = PARAMS.get(k.rule_id);
        const where = `key (rule ${k.rule_id}, family ${k.family}, /${k.plen}, ${k.addr.toString('hex')}${k.bytes ? ', bytes' : ''})`;
        if (!rule) fail(`every key names a rule of the policy: ${where}`);
        const plen = k.family === 4 ? KEY_V4 : k.family === 6 ? KEY_V6 : -1;
        if (plen < 0 || k.plen !== plen || k.bytes) fail(`every key has its family and its rule's prefix length: ${where}`);
        const masked = keyAddr({ family: k.family as 4 | 6, addr: k.addr });
        if (masked.slice(2) !== k.addr.toString('hex') || (k.family === 4 && !k.addr.subarray(4).equals(Buffer.alloc(12)))) fail(`every key's address is masked to its prefix: ${where}`);
        if (rule.src.length && !rule.src.some((x) => covers(x, { family: k.family as 4 | 6, plen: k.plen, addr: k.addr }))) {
          fail(`a rule with source prefixes only charges sources inside them: ${where}`);
        }
        if (this.o.kernelClock) continue;
        // A token bucket at a fixed clock: the word is now + (packets charged) x cost, in quanta.
        const used = backlog(st.word, (this.now << rule.d.shift) & U64, rule.d);
        if (used % rule.inc !== 0n || used > rule.cap || used / rule.inc > rule.burst) {
          fail(`passes never exceed the limit: ${where} was charged ${Number(used) / Number(rule.inc)} packets of ${rule.inc} quanta, bucket ${rule.cap} quanta, burst ${rule.burst}`);
        }
        charges += used / rule.inc;
        charged.set(masked, (charged.get(masked) ?? 0n) + used / rule.inc);
      }
    }
    const pass = d.slice(0, -1).reduce((s, c) => s + c.reason_packets[Reason.PASS]!, 0n);
    if (charges !== pass && !this.o.kernelClock) fail(`the charges on all keys equal the PASS counters: ${charges} charged, ${pass} counted`);
    const inserted = d.reduce((s, c) => s + c.new_states, 0n);
    if (inserted !== BigInt(keys)) fail(`every insertion is still in the map (none evicted, none uncounted): ${inserted} counted, ${keys} entries`);
    for (const [src, n] of this.o.kernelClock ? [] : this.knownPasses) {
      if (BigInt(n) > (charged.get(src) ?? 0n)) fail(`passes never exceed the limit: source ${src} passed ${n} readable frames, its keys were charged ${charged.get(src) ?? 0n}`);
    }
    for (const [name, c] of [['global', d[d.length - 1]!], ...d.slice(0, -1).map((c, s) => [`rule ${this.slots[s]}`, c] as const)] as const) {
      c.reason_packets.forEach((x, r) => {
        if (x) this.report.reasons[`${name} ${NAME[r]}`] = (this.report.reasons[`${name} ${NAME[r]}`] ?? 0) + Number(x);
      });
    }
    this.report.keys += keys;
    for (const [m] of stateMapsOf(this.dp.limiter.maps)) {
      const mine = all.filter(([x]) => x === m).map(([, k]) => k);
      for (let j = 0; j < mine.length; j += 4096) m.deleteBatch(mine.slice(j, j + 4096));
    }
  }
}
