// A small fluent packet builder: fixtures for BPF_PROG_TEST_RUN, and the lab generator's frames.
//
//   pkt().eth().vlan(100).ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }).udp({ sport: 1234, dport: 53 }).payload(100).build()
//
// Layers are stacked in call order. Every "what comes next" field (ethertype, VLAN inner type, IPv4
// protocol, IPv6 next header, extension header next header) is filled in from the following layer
// unless the caller overrides it, and every length and checksum is computed unless overridden, so a
// test only spells out what it is about. Overrides write exactly what they are given: that is how
// tests build malformed packets (bad IHL, lying lengths, looping extension header chains).
//
// Lengths and checksums always describe the whole packet as built; `.truncate(n)` / `.bytes(n)` cut
// the result afterwards, so a truncated packet still claims its original lengths, as a packet cut
// short on the wire would.

// ---------------------------------------------------------------------------------------------
// Constants

export const ETH_P = {
  IPV4: 0x0800,
  ARP: 0x0806,
  VLAN: 0x8100, // 802.1Q
  QINQ: 0x88a8, // 802.1ad
  IPV6: 0x86dd,
  LLDP: 0x88cc,
  LOCAL_EXP: 0x88b5, // IEEE 802 local experimental; used when nothing says otherwise
} as const;

export const IPPROTO = {
  HOPOPTS: 0,
  ICMP: 1,
  IPIP: 4,
  TCP: 6,
  UDP: 17,
  SCTP: 132,
  IPV6: 41,
  ROUTING: 43,
  FRAGMENT: 44,
  ESP: 50,
  AH: 51,
  ICMPV6: 58,
  NONE: 59, // IPv6 "no next header"
  DSTOPTS: 60,
  EXP: 253, // RFC 3692 experimentation; IPv4 default when no layer follows
} as const;

export const TCP_FLAGS = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

export type Bytes = Uint8Array | readonly number[];

// ---------------------------------------------------------------------------------------------
// Address helpers

/** Parses dotted-quad IPv4 (exactly four decimal parts, each 0..255, no leading zeros). */
export function ipv4ToBytes(s: string): Buffer {
  const parts = s.split('.');
  if (parts.length !== 4) throw new TypeError(`not an IPv4 address: ${JSON.stringify(s)}`);
  const out = Buffer.alloc(4);
  parts.forEach((p, i) => {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) {
      throw new TypeError(`not an IPv4 address: ${JSON.stringify(s)}`);
    }
    out[i] = Number(p);
  });
  return out;
}

/** Parses IPv6 text: full form, `::` compression, and a trailing dotted IPv4 (`::ffff:1.2.3.4`). */
export function ipv6ToBytes(s: string): Buffer {
  const bad = (): never => {
    throw new TypeError(`not an IPv6 address: ${JSON.stringify(s)}`);
  };
  if (s.length === 0 || s.length > 45) bad();
  const halves = s.split('::');
  if (halves.length > 2) bad();
  const groups = (text: string, allowV4Tail: boolean): number[] => {
    if (text === '') return [];
    const parts = text.split(':');
    const out: number[] = [];
    parts.forEach((p, i) => {
      if (allowV4Tail && i === parts.length - 1 && p.includes('.')) {
        const v4 = ipv4ToBytes(p);
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        bad();
      }
    });
    return out;
  };
  let words: number[];
  if (halves.length === 2) {
    const head = groups(halves[0]!, false);
    const tail = groups(halves[1]!, true);
    if (head.length + tail.length > 7) bad();
    words = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    words = groups(s, true);
    if (words.length !== 8) bad();
  }
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

/** IPv4 or IPv6 text to bytes, chosen by the presence of ':'. */
export function ipToBytes(s: string): Buffer {
  return s.includes(':') ? ipv6ToBytes(s) : ipv4ToBytes(s);
}

/**
 * 4 bytes to dotted quad; 16 bytes to RFC 5952 text (lower case, longest run of two or more zero
 * groups compressed, first run on a tie, IPv4-mapped `::ffff:a.b.c.d` in mixed notation).
 */
export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) throw new TypeError(`an IP address is 4 or 16 bytes, got ${b.length}`);
  const w: number[] = [];
  for (let i = 0; i < 16; i += 2) w.push((b[i]! << 8) | b[i + 1]!);
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  let bestAt = -1;
  let bestLen = 1; // a single zero group is not compressed (RFC 5952 4.2.2)
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (bestAt < 0) return hex(w);
  return `${hex(w.slice(0, bestAt))}::${hex(w.slice(bestAt + bestLen))}`;
}

/** A copy of `bytes` with every bit after the first `len` bits cleared. */
export function maskPrefix(bytes: Uint8Array, len: number): Buffer {
  if (!Number.isInteger(len) || len < 0 || len > bytes.length * 8) {
    throw new RangeError(`prefix length ${len} out of range 0..${bytes.length * 8}`);
  }
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, len - i * 8));
    out[i] = out[i]! & ((0xff00 >> keep) & 0xff);
  }
  return out;
}

/** `aa:bb:cc:dd:ee:ff` (or `-` separated) to 6 bytes. */
export function macToBytes(s: string): Buffer {
  const parts = s.split(/[:-]/);
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) {
    throw new TypeError(`not a MAC address: ${JSON.stringify(s)}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

// ---------------------------------------------------------------------------------------------
// Checksums

/** Ones' complement sum of 16-bit big-endian words (odd tail padded with zero), not folded/inverted. */
function sum16(buf: Uint8Array, acc = 0): number {
  let s = acc;
  const n = buf.length & ~1;
  for (let i = 0; i < n; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (buf.length & 1) s += buf[buf.length - 1]! << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The Internet checksum (RFC 1071) over `parts`, concatenated. Verifying a region that contains
 *  its own correct checksum gives 0. */
export function inetChecksum(...parts: Uint8Array[]): number {
  let s = 0;
  let carryOdd: number | undefined;
  for (const p of parts) {
    // Concatenation semantics: an odd-length part shifts the word alignment of the next one.
    let buf = p;
    if (carryOdd !== undefined) {
      buf = Buffer.concat([Buffer.from([carryOdd]), p]);
      carryOdd = undefined;
    }
    if (buf.length & 1) {
      carryOdd = buf[buf.length - 1];
      buf = buf.subarray(0, buf.length - 1);
    }
    s = sum16(buf, s);
    s = fold(s);
  }
  if (carryOdd !== undefined) s = fold(s + (carryOdd << 8));
  return ~s & 0xffff;
}

/** Pseudo-header for TCP/UDP/ICMPv6 checksums (RFC 768 / RFC 8200 8.1). */
export function pseudoHeader(src: Uint8Array, dst: Uint8Array, proto: number, length: number): Buffer {
  if (src.length === 4) {
    const b = Buffer.alloc(12);
    b.set(src, 0);
    b.set(dst, 4);
    b[9] = proto;
    b.writeUInt16BE(length & 0xffff, 10);
    return b;
  }
  const b = Buffer.alloc(40);
  b.set(src, 0);
  b.set(dst, 16);
  b.writeUInt32BE(length >>> 0, 32);
  b[39] = proto;
  return b;
}

// ---------------------------------------------------------------------------------------------
// Layer options

export interface EthOpts {
  /** Default 02:00:00:00:00:02. */
  dst?: string;
  /** Default 02:00:00:00:00:01. */
  src?: string;
  /** Ethertype; default from the next layer (VLAN TPID, IPv4, IPv6, ARP), else 0x88b5. */
  type?: number;
}

export interface VlanOpts {
  vid: number;
  pcp?: number;
  dei?: boolean;
  /** TPID announcing this tag, written by the previous layer: 0x8100 (default) or 0x88a8. */
  tpid?: number;
  /** Inner ethertype; default from the next layer. */
  type?: number;
}

export interface Ipv4Opts {
  src: string;
  dst: string;
  tos?: number;
  /** Default 64. */
  ttl?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** The reserved ("evil") flag bit. */
  reservedFlag?: boolean;
  /** Fragment offset in 8-byte units, as on the wire (0..8191). */
  fragOffset?: number;
  /** Default from the next layer, else 253. */
  protocol?: number;
  /** Option bytes, zero-padded (EOL) to a multiple of 4; IHL follows. */
  options?: Bytes;
  /** IHL field override (0..15); header bytes are still the real header + options. */
  ihl?: number;
  totalLength?: number;
  /** Header checksum field value (default computed). */
  checksum?: number;
  /** Write the computed checksum + 1, which is guaranteed wrong. */
  badChecksum?: boolean;
}

export interface Ipv6Opts {
  src: string;
  dst: string;
  /** Default 64. */
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
  /** Next header; default from the next layer, else 59 (no next header). */
  next?: number;
  payloadLength?: number;
}

/** Hop-by-hop and destination options headers. */
export interface OptsHdrOpts {
  next?: number;
  /** TLV option bytes after next/len; zero-padded (Pad1) to make the header a multiple of 8.
   *  Default: one PadN option filling 6 bytes. */
  options?: Bytes;
  /** Hdr Ext Len field override (8-octet units beyond the first 8). */
  hdrExtLen?: number;
}

export interface RoutingOpts {
  next?: number;
  /** Routing type, default 0 (with segmentsLeft 0 a node must just skip it). */
  routingType?: number;
  segmentsLeft?: number;
  /** Type-specific data after the first 4 bytes; default 4 reserved zero bytes + addresses. */
  data?: Bytes;
  /** Addresses appended after the 4 reserved bytes (ignored when `data` is given). */
  addresses?: string[];
  hdrExtLen?: number;
}

export interface Frag6Opts {
  next?: number;
  /** Fragment offset in 8-byte units (0..8191). */
  offset?: number;
  /** More-fragments flag. */
  m?: boolean;
  id?: number;
  /** The two reserved bits next to M, and the reserved byte. */
  res?: number;
  reserved?: number;
}

export interface AhOpts {
  next?: number;
  spi?: number;
  seq?: number;
  /** Integrity check value, default 12 zero bytes (HMAC-96 sized). */
  icv?: Bytes;
  /** Payload Len field override (4-octet units minus 2). */
  payloadLen?: number;
}

/** Any extension header with the generic next/len layout, announced with protocol number `type`. */
export interface Ext6Opts {
  /** What the previous header's next-header field says this is. */
  type: number;
  next?: number;
  /** Bytes after next/len; zero-padded to a multiple of 8 in total. Default 6 zero bytes. */
  data?: Bytes;
  hdrExtLen?: number;
}

export interface TcpOpts {
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  /** A number, or letters from "FSRPAUEC" (e.g. 'S', 'SA', 'FA', 'R'). Default 'S'. */
  flags?: number | string;
  /** Default 65535. */
  window?: number;
  urgent?: number;
  /** Option bytes, zero-padded to a multiple of 4. */
  options?: Bytes;
  /** Data offset field override (4-bit, in 32-bit words). */
  dataOffset?: number;
  checksum?: number;
  badChecksum?: boolean;
}

export interface SctpOpts {
  sport: number;
  dport: number;
  /** Verification tag (default 0). */
  vtag?: number;
  /** The CRC32c field as written (default 0: not computed; the data path does not check it). */
  checksum?: number;
}

export interface UdpOpts {
  sport: number;
  dport: number;
  length?: number;
  checksum?: number;
  /** Write 0 (no checksum; legal for IPv4 only). */
  noChecksum?: boolean;
  badChecksum?: boolean;
}

export interface IcmpOpts {
  /** Default 8 (echo request) for ICMP, 128 for ICMPv6. */
  type?: number;
  code?: number;
  id?: number;
  seq?: number;
  checksum?: number;
  badChecksum?: boolean;
}

export interface ArpOpts {
  /** 1 request (default), 2 reply. */
  op?: number;
  sha?: string;
  spa: string;
  tha?: string;
  tpa: string;
}

// ---------------------------------------------------------------------------------------------
// Layers

/** Where a layer sits in the built packet. */
export interface LayerInfo {
  kind: string;
  offset: number;
  /** Header length (for payload/raw: the byte count). */
  length: number;
}

interface EncodeCtx {
  /** Bytes after this layer (excluding the trailer). */
  rest: Buffer;
  next: Layer | undefined;
  /** Nearest IPv4/IPv6 layer before this one, for pseudo-headers. */
  ip: IpLayer | undefined;
}

interface Layer {
  kind: string;
  /** The ethertype a preceding L2 header writes for this layer. */
  ethertype?: number;
  /** The protocol number a preceding IP/extension header writes for this layer. */
  ipProto?: number;
  encode(ctx: EncodeCtx): Buffer;
}

interface IpLayer extends Layer {
  src: Buffer;
  dst: Buffer;
}

function toBuf(b: Bytes): Buffer {
  return Buffer.from(b as Uint8Array);
}

function padTo(b: Buffer, multiple: number): Buffer {
  const r = b.length % multiple;
  return r === 0 ? b : Buffer.concat([b, Buffer.alloc(multiple - r)]);
}

function nextEthertype(ctx: EncodeCtx): number {
  return ctx.next?.ethertype ?? ETH_P.LOCAL_EXP;
}

function nextProto(ctx: EncodeCtx, dflt: number): number {
  return ctx.next?.ipProto ?? dflt;
}

function checkRange(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${name} ${v} out of range 0..${max}`);
}

function parseTcpFlags(f: number | string): number {
  if (typeof f === 'number') return f;
  const letters = 'FSRPAUEC';
  let v = 0;
  for (const ch of f.toUpperCase()) {
    const i = letters.indexOf(ch);
    if (i < 0) throw new TypeError(`unknown TCP flag letter ${JSON.stringify(ch)} in ${JSON.stringify(f)}`);
    v |= 1 << i;
  }
  return v;
}

/** Sets the checksum at `at` in `hdr`, honouring checksum / badChecksum overrides. */
function putChecksum(hdr: Buffer, at: number, computed: number, o: { checksum?: number; badChecksum?: boolean }): void {
  let v = computed;
  if (o.checksum !== undefined) v = o.checksum;
  // +1 is wrong for every value except 0xffff, whose +1 (0x0000) is the other ones' complement zero.
  else if (o.badChecksum) v = computed === 0xffff ? 1 : computed + 1;
  hdr.writeUInt16BE(v, at);
}

/** Extension header with next/len layout; `body` is everything after the first two bytes. */
function extHeader(next: number, body: Buffer, hdrExtLen: number | undefined): Buffer {
  const hdr = padTo(Buffer.concat([Buffer.alloc(2), body]), 8);
  hdr[0] = next;
  hdr[1] = hdrExtLen ?? hdr.length / 8 - 1;
  return hdr;
}

// ---------------------------------------------------------------------------------------------
// The builder

export class PacketBuilder {
  private readonly layers: Layer[] = [];
  private trailerBytes: Buffer = Buffer.alloc(0);
  private truncateAt: number | undefined;

  /** Ethernet II header. */
  eth(o: EthOpts = {}): this {
    const dst = macToBytes(o.dst ?? '02:00:00:00:00:02');
    const src = macToBytes(o.src ?? '02:00:00:00:00:01');
    return this.push({
      kind: 'eth',
      encode(ctx) {
        const h = Buffer.alloc(14);
        h.set(dst, 0);
        h.set(src, 6);
        h.writeUInt16BE(o.type ?? nextEthertype(ctx), 12);
        return h;
      },
    });
  }

  /** One VLAN tag (TCI + inner ethertype); its TPID is written by the layer before it. Call
   *  repeatedly to stack tags. `vlan(100)` is 802.1Q; `vlan({vid: 100, tpid: 0x88a8})` 802.1ad. */
  vlan(v: number | VlanOpts): this {
    const o: VlanOpts = typeof v === 'number' ? { vid: v } : v;
    checkRange('VLAN id', o.vid, 0xfff);
    checkRange('VLAN pcp', o.pcp ?? 0, 7);
    return this.push({
      kind: 'vlan',
      ethertype: o.tpid ?? ETH_P.VLAN,
      encode(ctx) {
        const h = Buffer.alloc(4);
        h.writeUInt16BE(((o.pcp ?? 0) << 13) | (o.dei ? 0x1000 : 0) | o.vid, 0);
        h.writeUInt16BE(o.type ?? nextEthertype(ctx), 2);
        return h;
      },
    });
  }

  /** An 802.1ad service tag (TPID 0x88a8). */
  svlan(vid: number, o: Omit<VlanOpts, 'vid' | 'tpid'> = {}): this {
    return this.vlan({ ...o, vid, tpid: ETH_P.QINQ });
  }

  /** ARP for IPv4 over Ethernet. */
  arp(o: ArpOpts): this {
    const sha = macToBytes(o.sha ?? '02:00:00:00:00:01');
    const tha = macToBytes(o.tha ?? '00:00:00:00:00:00');
    const spa = ipv4ToBytes(o.spa);
    const tpa = ipv4ToBytes(o.tpa);
    return this.push({
      kind: 'arp',
      ethertype: ETH_P.ARP,
      encode() {
        const h = Buffer.alloc(28);
        h.writeUInt16BE(1, 0); // Ethernet
        h.writeUInt16BE(ETH_P.IPV4, 2);
        h[4] = 6;
        h[5] = 4;
        h.writeUInt16BE(o.op ?? 1, 6);
        h.set(sha, 8);
        h.set(spa, 14);
        h.set(tha, 18);
        h.set(tpa, 24);
        return h;
      },
    });
  }

  ipv4(o: Ipv4Opts): this {
    const src = ipv4ToBytes(o.src);
    const dst = ipv4ToBytes(o.dst);
    const options = padTo(toBuf(o.options ?? []), 4);
    if (options.length > 40) throw new RangeError(`IPv4 options are at most 40 bytes, got ${options.length}`);
    checkRange('IPv4 fragment offset', o.fragOffset ?? 0, 0x1fff);
    if (o.ihl !== undefined) checkRange('IPv4 IHL', o.ihl, 15);
    const layer: IpLayer = {
      kind: 'ipv4',
      ethertype: ETH_P.IPV4,
      ipProto: IPPROTO.IPIP,
      src,
      dst,
      encode(ctx) {
        const h = Buffer.alloc(20 + options.length);
        const ihl = o.ihl ?? h.length / 4;
        h[0] = 0x40 | ihl;
        h[1] = o.tos ?? 0;
        h.writeUInt16BE((o.totalLength ?? h.length + ctx.rest.length) & 0xffff, 2);
        h.writeUInt16BE(o.id ?? 0, 4);
        const flags = (o.reservedFlag ? 0x8000 : 0) | (o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0);
        h.writeUInt16BE(flags | (o.fragOffset ?? 0), 6);
        h[8] = o.ttl ?? 64;
        h[9] = o.protocol ?? nextProto(ctx, IPPROTO.EXP);
        h.set(src, 12);
        h.set(dst, 16);
        options.copy(h, 20);
        putChecksum(h, 10, inetChecksum(h), o);
        return h;
      },
    };
    return this.push(layer);
  }

  ipv6(o: Ipv6Opts): this {
    const src = ipv6ToBytes(o.src);
    const dst = ipv6ToBytes(o.dst);
    checkRange('IPv6 flow label', o.flowLabel ?? 0, 0xfffff);
    const layer: IpLayer = {
      kind: 'ipv6',
      ethertype: ETH_P.IPV6,
      ipProto: IPPROTO.IPV6,
      src,
      dst,
      encode(ctx) {
        const h = Buffer.alloc(40);
        h.writeUInt32BE(((6 << 28) | ((o.trafficClass ?? 0) << 20) | (o.flowLabel ?? 0)) >>> 0, 0);
        h.writeUInt16BE((o.payloadLength ?? ctx.rest.length) & 0xffff, 4);
        h[6] = o.next ?? nextProto(ctx, IPPROTO.NONE);
        h[7] = o.hopLimit ?? 64;
        h.set(src, 8);
        h.set(dst, 24);
        return h;
      },
    };
    return this.push(layer);
  }

  /** IPv6 hop-by-hop options header (protocol 0). */
  hopByHop(o: OptsHdrOpts = {}): this {
    return this.optsHeader('hopbyhop', IPPROTO.HOPOPTS, o);
  }

  /** IPv6 destination options header (protocol 60). */
  destOpts(o: OptsHdrOpts = {}): this {
    return this.optsHeader('dstopts', IPPROTO.DSTOPTS, o);
  }

  /** IPv6 routing header (protocol 43). */
  routing(o: RoutingOpts = {}): this {
    return this.push({
      kind: 'routing',
      ipProto: IPPROTO.ROUTING,
      encode(ctx) {
        const data = o.data
          ? toBuf(o.data)
          : Buffer.concat([Buffer.alloc(4), ...(o.addresses ?? []).map(ipv6ToBytes)]);
        const body = Buffer.concat([Buffer.from([o.routingType ?? 0, o.segmentsLeft ?? 0]), data]);
        return extHeader(o.next ?? nextProto(ctx, IPPROTO.NONE), body, o.hdrExtLen);
      },
    });
  }

  /** IPv6 fragment header (protocol 44), always 8 bytes. */
  fragment6(o: Frag6Opts = {}): this {
    checkRange('IPv6 fragment offset', o.offset ?? 0, 0x1fff);
    checkRange('IPv6 fragment reserved bits', o.res ?? 0, 3);
    return this.push({
      kind: 'fragment',
      ipProto: IPPROTO.FRAGMENT,
      encode(ctx) {
        const h = Buffer.alloc(8);
        h[0] = o.next ?? nextProto(ctx, IPPROTO.NONE);
        h[1] = o.reserved ?? 0;
        h.writeUInt16BE(((o.offset ?? 0) << 3) | ((o.res ?? 0) << 1) | (o.m ? 1 : 0), 2);
        h.writeUInt32BE((o.id ?? 0) >>> 0, 4);
        return h;
      },
    });
  }

  /** Authentication header (protocol 51); its length field counts 4-octet units minus 2. */
  ah(o: AhOpts = {}): this {
    const icv = toBuf(o.icv ?? new Uint8Array(12));
    return this.push({
      kind: 'ah',
      ipProto: IPPROTO.AH,
      encode(ctx) {
        const h = Buffer.alloc(12 + icv.length);
        h[0] = o.next ?? nextProto(ctx, IPPROTO.NONE);
        h[1] = o.payloadLen ?? h.length / 4 - 2;
        h.writeUInt32BE((o.spi ?? 0x100) >>> 0, 4);
        h.writeUInt32BE((o.seq ?? 1) >>> 0, 8);
        icv.copy(h, 12);
        return h;
      },
    });
  }

  /** Any header in next/len layout, announced by the previous header as protocol `o.type`: for
   *  unknown, bogus or self-referencing chains. */
  ext6(o: Ext6Opts): this {
    return this.push({
      kind: `ext6(${o.type})`,
      ipProto: o.type,
      encode(ctx) {
        return extHeader(o.next ?? nextProto(ctx, IPPROTO.NONE), toBuf(o.data ?? new Uint8Array(6)), o.hdrExtLen);
      },
    });
  }

  tcp(o: TcpOpts): this {
    const options = padTo(toBuf(o.options ?? []), 4);
    if (options.length > 40) throw new RangeError(`TCP options are at most 40 bytes, got ${options.length}`);
    if (o.dataOffset !== undefined) checkRange('TCP data offset', o.dataOffset, 15);
    const flags = parseTcpFlags(o.flags ?? 'S');
    return this.push({
      kind: 'tcp',
      ipProto: IPPROTO.TCP,
      encode(ctx) {
        const h = Buffer.alloc(20 + options.length);
        h.writeUInt16BE(o.sport, 0);
        h.writeUInt16BE(o.dport, 2);
        h.writeUInt32BE((o.seq ?? 0) >>> 0, 4);
        h.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
        h[12] = (o.dataOffset ?? h.length / 4) << 4;
        h[13] = flags & 0xff;
        h.writeUInt16BE(o.window ?? 65535, 14);
        h.writeUInt16BE(o.urgent ?? 0, 18);
        options.copy(h, 20);
        const len = h.length + ctx.rest.length;
        const ph = ctx.ip ? pseudoHeader(ctx.ip.src, ctx.ip.dst, IPPROTO.TCP, len) : Buffer.alloc(0);
        putChecksum(h, 16, inetChecksum(ph, h, ctx.rest), o);
        return h;
      },
    });
  }

  udp(o: UdpOpts): this {
    return this.push({
      kind: 'udp',
      ipProto: IPPROTO.UDP,
      encode(ctx) {
        const h = Buffer.alloc(8);
        const len = 8 + ctx.rest.length;
        h.writeUInt16BE(o.sport, 0);
        h.writeUInt16BE(o.dport, 2);
        h.writeUInt16BE((o.length ?? len) & 0xffff, 4);
        if (o.noChecksum) {
          h.writeUInt16BE(0, 6);
        } else {
          const ph = ctx.ip ? pseudoHeader(ctx.ip.src, ctx.ip.dst, IPPROTO.UDP, len) : Buffer.alloc(0);
          const c = inetChecksum(ph, h, ctx.rest);
          putChecksum(h, 6, c === 0 ? 0xffff : c, o); // 0 means "no checksum" (RFC 768)
        }
        return h;
      },
    });
  }

  /** SCTP common header (RFC 9260): source port, destination port, verification tag, checksum. */
  sctp(o: SctpOpts): this {
    return this.push({
      kind: 'sctp',
      ipProto: IPPROTO.SCTP,
      encode() {
        const h = Buffer.alloc(12);
        h.writeUInt16BE(o.sport, 0);
        h.writeUInt16BE(o.dport, 2);
        h.writeUInt32BE((o.vtag ?? 0) >>> 0, 4);
        h.writeUInt32BE((o.checksum ?? 0) >>> 0, 8);
        return h;
      },
    });
  }

  /** ICMP (v4) echo-style header: type, code, checksum, id, seq. */
  icmp(o: IcmpOpts = {}): this {
    return this.push({
      kind: 'icmp',
      ipProto: IPPROTO.ICMP,
      encode(ctx) {
        const h = icmpHeader(o, 8);
        putChecksum(h, 2, inetChecksum(h, ctx.rest), o);
        return h;
      },
    });
  }

  /** ICMPv6 echo-style header; the checksum includes the IPv6 pseudo-header. */
  icmpv6(o: IcmpOpts = {}): this {
    return this.push({
      kind: 'icmpv6',
      ipProto: IPPROTO.ICMPV6,
      encode(ctx) {
        const h = icmpHeader(o, 128);
        const len = h.length + ctx.rest.length;
        const ph = ctx.ip ? pseudoHeader(ctx.ip.src, ctx.ip.dst, IPPROTO.ICMPV6, len) : Buffer.alloc(0);
        putChecksum(h, 2, inetChecksum(ph, h, ctx.rest), o);
        return h;
      },
    });
  }

  /** `n` bytes of the pattern 0,1,2,…,255,0,… (or `fill` repeated), or the given bytes. */
  payload(n: number | Bytes, fill?: number): this {
    let b: Buffer;
    if (typeof n === 'number') {
      checkRange('payload length', n, 1 << 24);
      b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = fill ?? i & 0xff;
    } else {
      b = toBuf(n);
    }
    return this.push({ kind: 'payload', encode: () => b });
  }

  /** Given bytes (array, Uint8Array, or a hex string; spaces and colons are ignored). Counted in
   *  lengths like a payload. */
  raw(bytes: Bytes | string): this {
    const b = typeof bytes === 'string' ? hexToBytes(bytes) : toBuf(bytes);
    return this.push({ kind: 'raw', encode: () => b });
  }

  /** Bytes appended after everything and counted in no length field (Ethernet padding, junk). */
  trailer(n: number | Bytes): this {
    this.trailerBytes = typeof n === 'number' ? Buffer.alloc(n) : toBuf(n);
    return this;
  }

  /** Cut the built packet to its first `n` bytes (lengths and checksums still describe the whole). */
  truncate(n: number): this {
    checkRange('truncate length', n, 1 << 24);
    this.truncateAt = n;
    return this;
  }

  /** The packet, and where each layer starts. */
  buildWithLayout(): { buf: Buffer; layers: LayerInfo[] } {
    const enc: Buffer[] = new Array(this.layers.length);
    let rest = Buffer.alloc(0);
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const layer = this.layers[i]!;
      let ip: IpLayer | undefined;
      for (let j = i - 1; j >= 0 && !ip; j--) {
        const l = this.layers[j]!;
        if (l.kind === 'ipv4' || l.kind === 'ipv6') ip = l as IpLayer;
      }
      const h = layer.encode({ rest, next: this.layers[i + 1], ip });
      enc[i] = h;
      rest = Buffer.concat([h, rest]);
    }
    let off = 0;
    const layers = this.layers.map((l, i) => {
      const info = { kind: l.kind, offset: off, length: enc[i]!.length };
      off += enc[i]!.length;
      return info;
    });
    let buf = Buffer.concat([rest, this.trailerBytes]);
    if (this.truncateAt !== undefined) buf = buf.subarray(0, this.truncateAt);
    return { buf: Buffer.from(buf), layers };
  }

  build(): Buffer {
    return this.buildWithLayout().buf;
  }

  /** The built packet, or its first `n` bytes. */
  bytes(n?: number): Buffer {
    const b = this.build();
    return n === undefined ? b : Buffer.from(b.subarray(0, n));
  }

  /** Offset of the `nth` (0-based) layer of `kind` in the built packet. */
  offsetOf(kind: string, nth = 0): number {
    const l = this.buildWithLayout().layers.filter((x) => x.kind === kind)[nth];
    if (!l) throw new Error(`no layer ${kind}#${nth}`);
    return l.offset;
  }

  private push(l: Layer): this {
    this.layers.push(l);
    return this;
  }

  private optsHeader(kind: string, proto: number, o: OptsHdrOpts): this {
    return this.push({
      kind,
      ipProto: proto,
      encode(ctx) {
        const opts = toBuf(o.options ?? [0x01, 0x04, 0, 0, 0, 0]); // PadN, 4 bytes of padding
        return extHeader(o.next ?? nextProto(ctx, IPPROTO.NONE), opts, o.hdrExtLen);
      },
    });
  }
}

function icmpHeader(o: IcmpOpts, dfltType: number): Buffer {
  const h = Buffer.alloc(8);
  h[0] = o.type ?? dfltType;
  h[1] = o.code ?? 0;
  h.writeUInt16BE(o.id ?? 0, 4);
  h.writeUInt16BE(o.seq ?? 0, 6);
  return h;
}

/** Hex text to bytes; whitespace, ':' and '-' are ignored. */
export function hexToBytes(s: string): Buffer {
  const clean = s.replace(/[\s:-]/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new TypeError(`bad hex: ${JSON.stringify(s)}`);
  return Buffer.from(clean, 'hex');
}

/** Start a packet. */
export function pkt(): PacketBuilder {
  return new PacketBuilder();
}
