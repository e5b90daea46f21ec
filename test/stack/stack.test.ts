/**
 * The stack suite (issue 9): no class of frame passes unlimited. Two namespaces joined by a veth,
 * Sluice's XDP program on the server's end; crafted frames from one source per class, sent from the
 * client's end (paced AF_PACKET); sockets in the server namespace count what the host's own stack
 * delivers (a UDP socket, or a raw socket of the protocol the stack reaches).
 *
 * Each class runs twice: a control with nothing attached, which shows whether the kernel delivers it
 * (>= 95% of its frames, or datagrams), and a run with Sluice under a token bucket of 100/s burst 100
 * per source. A delivered class passes when what reaches the socket stays within
 * burst + rate x elapsed + slack; a class the kernel drops by itself is judged on Sluice's counters
 * (every frame charged to a rule or dropped, and what passes within the limit). A second policy (default 1,000/s, UDP/53 at
 * 10/s) checks that no unusual form of a UDP/53 packet gets the laxer default rule.
 *
 * The object is $SLUICE_STACK_OBJECT (default bpf/sluice.bpf.o), so the same suite runs against the
 * base commit's objects. Set $SLUICE_STACK_REPORT to a path to get every number as JSON.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Link, type Collection } from '../../src/ebpf';
import { pacedSend } from '../../src/ebpf/lab';
import { pkt, type PacketBuilder } from '../../src/lab/packet';
import type { Limiter } from '../../src/limiter/limiter';
import type { RuleSpec } from '../../src/limiter/policy';
import { Testbed, type Veth } from '../lib/netns';
import { countOf, loadSluice, reasonName, sendSequence, StackReceiver, STACK_OBJECT } from './lib';

const FRAMES = 3000;
const PPS = 20_000;
/** Packets over the token bucket's exact bound that we still accept (timing at both ends). */
const SLACK = 5;
/** Frames the counters may see beyond those sent (the client's own IPv6 control packets). */
const NOISE = 5;
const UDP_PORT = 9000;
const DNS_PORT = 53;
const TCP_PORT = 9001;
/** Whether the kernel can have VLAN devices (this VM's cannot; see the VLAN classes). */
const VLAN_DEVICES = false;

const MAIN: RuleSpec[] = [{ id: 0, alg: 'token', pps: 100, ppsBurst: 100 }];
const STRICT: RuleSpec[] = [
  { id: 0, alg: 'token', pps: 1000, ppsBurst: 1000 },
  { id: 1, name: 'udp-53', proto: 17, dport: [53, 53], alg: 'token', pps: 10, ppsBurst: 10 },
];
const LIMITS = { main: { rate: 100, burst: 100, rules: [0] }, strict: { rate: 10, burst: 10, rules: [0, 1] } } as const;

type Ext = 'hbh' | 'dst' | 'rt' | 'frag' | 'ah';
type End = 'udp' | 'tcp' | 'esp' | 'none';

interface Cls {
  group: string;
  name: string;
  /** Receiver socket label (see lib.ts): udp4:PORT, udp6:PORT, raw4:PROTO, raw6:PROTO. */
  sock: string;
  src: string;
  /** What the kernel does with it, unprotected: decides how the run with Sluice is judged. */
  kernel: 'delivers' | 'drops';
  policy: 'main' | 'strict';
  /** One frame sent FRAMES times, or units (datagrams) of several frames each. */
  frame?: Buffer;
  unit?: (i: number) => Buffer[];
}

interface Run {
  sent: number;
  units: number;
  elapsedS: number;
  socket: number;
  /** Counters moved during the run (Sluice runs only). */
  pass?: number;
  drop?: number;
  perRule?: Record<number, { pass: number; drop: number }>;
  global?: Record<string, number>;
  /** Verdicts made in the global slot (frames charged to no rule). */
  globalPass?: number;
  globalDrop?: number;
}

const results = new Map<string, { cls: Cls; control?: Run; sluice?: Run }>();

let tb: Testbed;
let veth: Veth;
let cli: string;
let srv: string;
let rx: StackReceiver;
let sluice: { coll: Collection; limiter: Limiter } | undefined;
let link: Link | undefined;
let SRV4: string;
let SRV6: string;
const classes: Cls[] = [];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Frames

let srcN = 0;
const nextSrc4 = (net = '10.88'): string => `${net}.${++srcN}.1`;
const nextSrc6 = (): string => `fd00:99:${(++srcN).toString(16)}::1`;

function E(): PacketBuilder {
  return pkt().eth({ dst: veth.b.mac, src: veth.a.mac });
}

function exts(b: PacketBuilder, list: Ext[], lastNext?: number, idBase = 0): PacketBuilder {
  list.forEach((e, i) => {
    const next = i === list.length - 1 ? lastNext : undefined;
    const o = next === undefined ? {} : { next };
    if (e === 'hbh') b.hopByHop(o);
    else if (e === 'dst') b.destOpts(o);
    else if (e === 'rt') b.routing({ ...o, routingType: 0, segmentsLeft: 0 });
    else if (e === 'frag') b.fragment6({ ...o, offset: 0, m: false, id: idBase + i });
    else b.ah(o);
  });
  return b;
}

const ESP_BODY = '00000100 00000001 0102030405060708090a0b0c0d0e0f10';

function v6chain(src: string, list: Ext[], end: End, dport = UDP_PORT): Buffer {
  const lastNext = end === 'esp' ? 50 : end === 'none' ? 59 : undefined;
  const b = E().ipv6({ src, dst: SRV6, ...(list.length === 0 && lastNext !== undefined ? { next: lastNext } : {}) });
  exts(b, list, lastNext);
  if (end === 'udp') b.udp({ sport: 40000, dport }).payload(32);
  else if (end === 'tcp') b.tcp({ sport: 40000, dport: TCP_PORT, flags: 'S', seq: 1 });
  else if (end === 'esp') b.raw(ESP_BODY);
  else b.payload(16);
  return b.build();
}

/** Socket that sees a v6 chain first: the first AH, else what the chain ends in. */
function v6sock(list: Ext[], end: End, dport = UDP_PORT): string {
  if (list.includes('ah')) return 'raw6:51';
  return end === 'udp' ? `udp6:${dport}` : end === 'tcp' ? 'raw6:6' : end === 'esp' ? 'raw6:50' : 'raw6:59';
}

/** The bytes after the IP header of an unfragmented datagram (checksums right for src/dst). */
function l4of(family: 4 | 6, src: string, build: (b: PacketBuilder) => PacketBuilder): Buffer {
  const b = family === 4 ? pkt().ipv4({ src, dst: SRV4 }) : pkt().ipv6({ src, dst: SRV6 });
  return build(b).build().subarray(family === 4 ? 20 : 40);
}

interface Piece { off: number; len: number; more: boolean }

function frags4(src: string, proto: number, l4: Buffer, pieces: Piece[], id: number, options?: number[]): Buffer[] {
  return pieces.map((p, k) =>
    E().ipv4({ src, dst: SRV4, id, protocol: proto, mf: p.more, fragOffset: p.off / 8, ...(k === 0 && options ? { options } : {}) })
      .raw(l4.subarray(p.off, p.off + p.len)).build());
}

function frags6(src: string, next: number, l4: Buffer, pieces: Piece[], id: number, pre: Ext[] = []): Buffer[] {
  return pieces.map((p) => {
    const b = E().ipv6({ src, dst: SRV6 });
    exts(b, pre);
    return b.fragment6({ next, offset: p.off / 8, m: p.more, id }).raw(l4.subarray(p.off, p.off + p.len)).build();
  });
}

const split = (...lens: number[]): Piece[] => {
  let off = 0;
  return lens.map((len, i) => {
    const p = { off, len, more: i < lens.length - 1 };
    off += len;
    return p;
  });
};

// IPv4 option bytes.
const OPT = {
  nops: [1, 1, 1, 0],
  rr: [7, 39, 4, ...new Array<number>(36).fill(0)],
  ts: [68, 12, 5, 0, ...new Array<number>(8).fill(0)],
  ra: [148, 4, 0, 0],
  unknown: [30, 4, 0, 0],
  nop40: new Array<number>(40).fill(1),
};

const TCPOPT = {
  common: [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7],
  full: [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7, 254, 20, 0xf9, 0x89, ...new Array<number>(16).fill(0)],
  unknown: [2, 4, 0x05, 0xb4, 253, 4, 0xab, 0xcd],
};

let phaseIdBase = 0;

function defineClasses(): void {
  const add = (c: Omit<Cls, 'policy'> & { policy?: Cls['policy'] }): void => {
    classes.push({ policy: 'main', ...c });
  };
  const udp4 = (src: string, dport = UDP_PORT, b: PacketBuilder = E()): Buffer =>
    b.ipv4({ src, dst: SRV4 }).udp({ sport: 40000, dport }).payload(32).build();
  const udp6 = (src: string, dport = UDP_PORT): Buffer => v6chain(src, [], 'udp', dport);

  // Sanity.
  let s = nextSrc4();
  add({ group: 'plain', name: 'IPv4 UDP', sock: `udp4:${UDP_PORT}`, src: s, kernel: 'delivers', frame: udp4(s) });
  s = nextSrc6();
  add({ group: 'plain', name: 'IPv6 UDP', sock: `udp6:${UDP_PORT}`, src: s, kernel: 'delivers', frame: udp6(s) });

  // IPv4 options.
  for (const [name, opt] of Object.entries(OPT)) {
    s = nextSrc4();
    add({ group: 'ipv4-options', name: `UDP, options ${name} (IHL ${5 + Math.ceil(opt.length / 4)})`, sock: `udp4:${UDP_PORT}`, src: s, kernel: 'delivers',
      frame: E().ipv4({ src: s, dst: SRV4, options: opt }).udp({ sport: 40000, dport: UDP_PORT }).payload(32).build() });
  }
  s = nextSrc4();
  add({ group: 'ipv4-options', name: 'TCP SYN, options rr', sock: 'raw4:6', src: s, kernel: 'delivers',
    frame: E().ipv4({ src: s, dst: SRV4, options: OPT.rr }).tcp({ sport: 40000, dport: TCP_PORT, flags: 'S', seq: 1 }).build() });

  // IPv4 fragments.
  {
    const udpL4 = (src: string, dport = UDP_PORT): Buffer => l4of(4, src, (b) => b.udp({ sport: 40000, dport }).payload(64)); // 72 bytes
    const tcpL4 = (src: string): Buffer => l4of(4, src, (b) => b.tcp({ sport: 40000, dport: TCP_PORT, flags: 'S', seq: 1 })); // 20 bytes
    const id = (i: number): number => (phaseIdBase + i) & 0xffff;
    s = nextSrc4();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv4-fragments', name: 'UDP datagrams in 2 fragments', sock: `udp4:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags4(src, 17, l4, split(32, 40), id(i)) }); }
    s = nextSrc4();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv4-fragments', name: 'UDP datagrams in 3 fragments', sock: `udp4:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags4(src, 17, l4, split(24, 24, 24), id(i)) }); }
    s = nextSrc4();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv4-fragments', name: 'UDP datagrams in 2 fragments, last first', sock: `udp4:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags4(src, 17, l4, split(32, 40), id(i)).reverse() }); }
    s = nextSrc4();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv4-fragments', name: 'UDP datagrams in 2 fragments, first with options rr', sock: `udp4:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags4(src, 17, l4, split(32, 40), id(i), OPT.rr) }); }
    s = nextSrc4();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv4-fragments', name: 'UDP, tiny first fragment (8 bytes: the UDP header)', sock: `udp4:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags4(src, 17, l4, split(8, 64), id(i)) }); }
    s = nextSrc4();
    { const src = s; const l4 = tcpL4(src);
      add({ group: 'ipv4-fragments', name: 'TCP SYN, tiny first fragment (8 of 20 header bytes)', sock: 'raw4:6', src, kernel: 'delivers', unit: (i) => frags4(src, 6, l4, split(8, 12), id(i)) }); }
    s = nextSrc4();
    add({ group: 'ipv4-fragments', name: 'UDP, only non-first fragments', sock: `udp4:${UDP_PORT}`, src: s, kernel: 'drops',
      frame: E().ipv4({ src: s, dst: SRV4, id: 777, protocol: 17, fragOffset: 100, mf: false }).payload(40).build() });
    s = nextSrc4();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv4-fragments', name: 'UDP, overlapping fragments (0-32, 16-72)', sock: `udp4:${UDP_PORT}`, src, kernel: 'drops',
        unit: (i) => frags4(src, 17, l4, [{ off: 0, len: 32, more: true }, { off: 16, len: 56, more: false }], id(i)) }); }
  }

  // IPv6 extension chains.
  const chains: Array<[string, Ext[]]> = [];
  for (const n of [1, 2, 4, 7, 8, 9, 12, 16]) chains.push([`${n} x dst`, new Array<Ext>(n).fill('dst')]);
  chains.push(['hbh', ['hbh']]);
  chains.push(['hbh + 15 x dst', ['hbh', ...new Array<Ext>(15).fill('dst')]]);
  chains.push(['rt0 (segments left 0)', ['rt']]);
  chains.push(['4 x rt0', ['rt', 'rt', 'rt', 'rt']]);
  chains.push(['atomic frag', ['frag']]);
  chains.push(['4 x atomic frag', ['frag', 'frag', 'frag', 'frag']]);
  chains.push(['hbh, dst, rt0, frag, dst', ['hbh', 'dst', 'rt', 'frag', 'dst']]);
  // Linux takes one fragment header per packet (a second one, even atomic, is dropped), any number
  // of routing (type 0, segments left 0) and destination options headers, hop-by-hop only first.
  const mixed16: Ext[] = ['hbh', 'dst', 'rt', 'dst', 'rt', 'frag', 'dst', 'rt', 'dst', 'rt', 'dst', 'rt', 'dst', 'rt', 'dst', 'dst'];
  const mixedNoFrag = mixed16.map((e) => (e === 'frag' ? 'dst' : e));
  chains.push(['16 mixed (hbh, then dst/rt0, one atomic frag)', mixed16]);
  for (const [name, list] of chains) {
    s = nextSrc6();
    add({ group: 'ipv6-chains', name: `${name} -> UDP`, sock: v6sock(list, 'udp'), src: s, kernel: name === '4 x atomic frag' ? 'drops' : 'delivers', frame: v6chain(s, list, 'udp') });
  }
  for (const end of ['tcp', 'esp', 'none'] as End[]) {
    for (const [name, list] of [['no ext', []], ['8 x dst', new Array<Ext>(8).fill('dst')], ['16 mixed', mixed16]] as Array<[string, Ext[]]>) {
      s = nextSrc6();
      add({ group: 'ipv6-chains', name: `${name} -> ${end.toUpperCase()}`, sock: v6sock(list, end), src: s, kernel: 'delivers', frame: v6chain(s, list, end) });
    }
  }
  for (const [name, list] of [['ah', ['ah']], ['hbh, dst, ah', ['hbh', 'dst', 'ah']], ['8 x dst, ah', [...new Array<Ext>(8).fill('dst'), 'ah']]] as Array<[string, Ext[]]>) {
    s = nextSrc6();
    add({ group: 'ipv6-chains', name: `${name} -> UDP (stack stops at AH)`, sock: v6sock(list, 'udp'), src: s, kernel: 'delivers', frame: v6chain(s, list, 'udp') });
  }
  s = nextSrc6();
  add({ group: 'ipv6-chains', name: 'dst with a 256-byte option -> UDP', sock: `udp6:${UDP_PORT}`, src: s, kernel: 'delivers',
    frame: E().ipv6({ src: s, dst: SRV6 }).destOpts({ options: [0x1e, 254, ...new Array<number>(254).fill(0), 1, 4, 0, 0, 0, 0] }).udp({ sport: 40000, dport: UDP_PORT }).payload(32).build() });
  s = nextSrc6();
  add({ group: 'ipv6-chains', name: 'dst, hbh (hbh not first) -> UDP', sock: `udp6:${UDP_PORT}`, src: s, kernel: 'drops', frame: v6chain(s, ['dst', 'hbh'], 'udp') });

  // IPv6 fragments.
  {
    const udpL4 = (src: string, dport = UDP_PORT): Buffer => l4of(6, src, (b) => b.udp({ sport: 40000, dport }).payload(64));
    const id = (i: number): number => (phaseIdBase + i) >>> 0;
    s = nextSrc6();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv6-fragments', name: 'UDP datagrams in 2 fragments', sock: `udp6:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags6(src, 17, l4, split(32, 40), id(i)) }); }
    s = nextSrc6();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv6-fragments', name: 'UDP datagrams in 3 fragments', sock: `udp6:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags6(src, 17, l4, split(24, 24, 24), id(i)) }); }
    s = nextSrc6();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv6-fragments', name: 'UDP datagrams in 2 fragments, last first', sock: `udp6:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags6(src, 17, l4, split(32, 40), id(i)).reverse() }); }
    s = nextSrc6();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv6-fragments', name: 'UDP datagrams in 2 fragments behind hbh, dst', sock: `udp6:${UDP_PORT}`, src, kernel: 'delivers', unit: (i) => frags6(src, 17, l4, split(32, 40), id(i), ['hbh', 'dst']) }); }
    s = nextSrc6();
    { const src = s; const l4 = l4of(6, src, (b) => b.destOpts().udp({ sport: 40000, dport: UDP_PORT }).payload(56));
      add({ group: 'ipv6-fragments', name: 'tiny first fragment (dst only; UDP in the second)', sock: `udp6:${UDP_PORT}`, src, kernel: 'drops', unit: (i) => frags6(src, 60, l4, split(8, 64), id(i)) }); }
    s = nextSrc6();
    add({ group: 'ipv6-fragments', name: 'atomic fragment -> UDP', sock: `udp6:${UDP_PORT}`, src: s, kernel: 'delivers', frame: v6chain(s, ['frag'], 'udp') });
    s = nextSrc6();
    add({ group: 'ipv6-fragments', name: 'hbh, dst, atomic fragment, dst -> UDP', sock: `udp6:${UDP_PORT}`, src: s, kernel: 'delivers', frame: v6chain(s, ['hbh', 'dst', 'frag', 'dst'], 'udp') });
    s = nextSrc6();
    add({ group: 'ipv6-fragments', name: 'UDP, only non-first fragments', sock: `udp6:${UDP_PORT}`, src: s, kernel: 'drops',
      frame: E().ipv6({ src: s, dst: SRV6 }).fragment6({ next: 17, offset: 100, m: false, id: 777 }).payload(40).build() });
    s = nextSrc6();
    { const src = s; const l4 = udpL4(src);
      add({ group: 'ipv6-fragments', name: 'UDP, overlapping fragments (0-32, 16-72)', sock: `udp6:${UDP_PORT}`, src, kernel: 'drops',
        unit: (i) => frags6(src, 17, l4, [{ off: 0, len: 32, more: true }, { off: 16, len: 56, more: false }], id(i)) }); }
  }

  // VLAN stacks. This kernel has no 802.1Q support (CONFIG_VLAN_8021Q is not set): no VLAN device
  // can take a tagged frame, so the kernel drops every one and the classes are judged on Sluice's
  // counters (every frame charged to a rule or dropped, passes within the limit).
  const stacks: Array<[string, Array<[number, number]>, boolean]> = [
    ['0x8100', [[0x8100, 10]], true],
    ['0x88a8', [[0x88a8, 20]], true],
    ['0x9100', [[0x9100, 25]], false],
    ['0x88a8, 0x8100', [[0x88a8, 30], [0x8100, 31]], true],
    ['0x8100, 0x8100', [[0x8100, 40], [0x8100, 41]], true],
    ['0x88a8, 0x8100, 0x8100', [[0x88a8, 50], [0x8100, 51], [0x8100, 52]], true],
    ['0x8100 x 3', [[0x8100, 60], [0x8100, 61], [0x8100, 62]], true],
    ['0x9100, 0x8100', [[0x9100, 70], [0x8100, 71]], false],
  ];
  stacks.forEach(([name, tags, linux], v) => {
    const net = `10.${90 + v}`;
    const src = nextSrc4(net);
    const b = E();
    for (const [tpid, vid] of tags) b.vlan({ vid, tpid });
    add({ group: 'vlan', name: `${tags.length} tag${tags.length > 1 ? 's' : ''} ${name}`, sock: `udp4:${UDP_PORT}`, src, kernel: linux && VLAN_DEVICES ? 'delivers' : 'drops',
      frame: b.ipv4({ src, dst: `${net}.0.2` }).udp({ sport: 40000, dport: UDP_PORT }).payload(32).build() });
    if (v === 0) {
      const src6 = `fd00:98::${++srcN}`;
      // Note: one /64 for the VLAN's IPv6 class only.
      add({ group: 'vlan', name: '1 tag 0x8100, IPv6 with 8 x dst', sock: `udp6:${UDP_PORT}`, src: src6, kernel: VLAN_DEVICES ? 'delivers' : 'drops',
        frame: exts(E().vlan({ vid: 10 }).ipv6({ src: src6, dst: 'fd00:90::2' }), new Array<Ext>(8).fill('dst')).udp({ sport: 40000, dport: UDP_PORT }).payload(32).build() });
    }
  });

  // TCP with options (SYNs to a listening port).
  for (const [name, opt] of Object.entries(TCPOPT)) {
    s = nextSrc4();
    add({ group: 'tcp-options', name: `IPv4 SYN, options ${name} (${opt.length} bytes)`, sock: 'raw4:6', src: s, kernel: 'delivers',
      frame: E().ipv4({ src: s, dst: SRV4 }).tcp({ sport: 40000, dport: TCP_PORT, flags: 'S', seq: 1, options: opt }).build() });
  }
  s = nextSrc6();
  add({ group: 'tcp-options', name: `IPv6 SYN, options full (40 bytes)`, sock: 'raw6:6', src: s, kernel: 'delivers',
    frame: E().ipv6({ src: s, dst: SRV6 }).tcp({ sport: 40000, dport: TCP_PORT, flags: 'S', seq: 1, options: TCPOPT.full }).build() });

  // Tunnels: the outer source is limited.
  s = nextSrc4();
  add({ group: 'tunnels', name: 'IPIP (4): IPv4 in IPv4', sock: 'raw4:4', src: s, kernel: 'delivers',
    frame: E().ipv4({ src: s, dst: SRV4 }).ipv4({ src: '192.0.2.1', dst: '198.51.100.1' }).udp({ sport: 40000, dport: UDP_PORT }).payload(32).build() });
  s = nextSrc4();
  add({ group: 'tunnels', name: 'GRE (47): IPv4 in GRE', sock: 'raw4:47', src: s, kernel: 'delivers',
    frame: E().ipv4({ src: s, dst: SRV4, protocol: 47 }).raw('0000 0800').ipv4({ src: '192.0.2.1', dst: '198.51.100.1' }).udp({ sport: 40000, dport: UDP_PORT }).payload(32).build() });
  s = nextSrc4();
  add({ group: 'tunnels', name: '6in4 (41): IPv6 in IPv4', sock: 'raw4:41', src: s, kernel: 'delivers',
    frame: E().ipv4({ src: s, dst: SRV4 }).ipv6({ src: '2001:db8::1', dst: '2001:db8::2' }).udp({ sport: 40000, dport: UDP_PORT }).payload(32).build() });
  s = nextSrc6();
  add({ group: 'tunnels', name: '4in6 (4): IPv4 in IPv6', sock: 'raw6:4', src: s, kernel: 'delivers',
    frame: E().ipv6({ src: s, dst: SRV6 }).ipv4({ src: '192.0.2.1', dst: '198.51.100.1' }).udp({ sport: 40000, dport: UDP_PORT }).payload(32).build() });

  // The strictest rule: UDP/53 at 10/s under a default of 1,000/s, whatever form the packet takes.
  const strict = (c: Omit<Cls, 'policy' | 'group'>): void => add({ ...c, group: 'strict-udp53', policy: 'strict' });
  s = nextSrc4();
  strict({ name: 'IPv4 UDP/53', sock: `udp4:${DNS_PORT}`, src: s, kernel: 'delivers', frame: udp4(s, DNS_PORT) });
  s = nextSrc6();
  strict({ name: 'IPv6 UDP/53', sock: `udp6:${DNS_PORT}`, src: s, kernel: 'delivers', frame: udp6(s, DNS_PORT) });
  s = nextSrc4();
  strict({ name: 'IPv4 UDP/53, 40 bytes of options', sock: `udp4:${DNS_PORT}`, src: s, kernel: 'delivers',
    frame: E().ipv4({ src: s, dst: SRV4, options: OPT.nop40 }).udp({ sport: 40000, dport: DNS_PORT }).payload(32).build() });
  for (const [name, list] of [['12 x dst', new Array<Ext>(12).fill('dst')], ['16 x dst', new Array<Ext>(16).fill('dst')], ['16 mixed', mixed16]] as Array<[string, Ext[]]>) {
    s = nextSrc6();
    strict({ name: `IPv6 ${name} -> UDP/53`, sock: `udp6:${DNS_PORT}`, src: s, kernel: 'delivers', frame: v6chain(s, list, 'udp', DNS_PORT) });
  }
  {
    s = nextSrc4();
    const src4 = s;
    const l44 = l4of(4, src4, (b) => b.udp({ sport: 40000, dport: DNS_PORT }).payload(64));
    strict({ name: 'IPv4 UDP/53 datagrams in 2 fragments', sock: `udp4:${DNS_PORT}`, src: src4, kernel: 'delivers', unit: (i) => frags4(src4, 17, l44, split(32, 40), (phaseIdBase + i) & 0xffff) });
    s = nextSrc6();
    const src6 = s;
    const l46 = l4of(6, src6, (b) => b.udp({ sport: 40000, dport: DNS_PORT }).payload(64));
    strict({ name: 'IPv6 UDP/53 datagrams in 2 fragments', sock: `udp6:${DNS_PORT}`, src: src6, kernel: 'delivers', unit: (i) => frags6(src6, 17, l46, split(32, 40), phaseIdBase + i) });
  }
  s = nextSrc4();
  strict({ name: 'IPv4 UDP, only non-first fragments', sock: `udp4:${DNS_PORT}`, src: s, kernel: 'drops',
    frame: E().ipv4({ src: s, dst: SRV4, id: 778, protocol: 17, fragOffset: 100, mf: false }).payload(40).build() });
  s = nextSrc6();
  strict({ name: 'IPv6 UDP, only non-first fragments', sock: `udp6:${DNS_PORT}`, src: s, kernel: 'drops',
    frame: E().ipv6({ src: s, dst: SRV6 }).fragment6({ next: 17, offset: 100, m: false, id: 778 }).payload(40).build() });
  s = nextSrc6();
  strict({ name: 'IPv6 hbh + 14 mixed dst/rt0, then non-first fragments only', sock: `udp6:${DNS_PORT}`, src: s, kernel: 'drops',
    frame: exts(E().ipv6({ src: s, dst: SRV6 }), mixedNoFrag.slice(0, 15)).fragment6({ next: 17, offset: 100, m: false, id: 779 }).payload(40).build() });

  for (const c of classes) {
    const key = `${c.group}: ${c.name}`;
    if (results.has(key)) throw new Error(`duplicate class ${key}`);
    results.set(key, { cls: c });
  }
}

// ---------------------------------------------------------------------------------------------
// Running a class

interface CounterSnap { rules: Record<number, { pass: number; drop: number }>; global: number[]; gpass: number; gdrop: number }

function readCounters(ids: readonly number[]): CounterSnap {
  const l = sluice!.limiter;
  const rules: CounterSnap['rules'] = {};
  for (const id of ids) {
    const c = l.counters(id);
    rules[id] = { pass: Number(c.packets[0]), drop: Number(c.packets[1]) };
  }
  const g = l.globalCounters();
  return { rules, global: g.reason_packets.map(Number), gpass: Number(g.packets[0]), gdrop: Number(g.packets[1]) };
}

async function runClass(c: Cls, withSluice: boolean): Promise<Run> {
  await rx.snap(); // forget anything before
  const ids = LIMITS[c.policy].rules;
  const before = withSluice ? readCounters(ids) : undefined;
  let sent: number;
  let units: number;
  let elapsedNs: number;
  if (c.frame) {
    // No rewrite: each frame goes out as built (the control runs fail if it did not).
    const r = await pacedSend(veth.a.ifname, c.frame, { pps: PPS, maxFrames: FRAMES, netns: cli });
    sent = r.sent;
    units = r.sent;
    elapsedNs = r.elapsedNs;
  } else {
    const per = c.unit!(0).length;
    units = Math.floor(FRAMES / per);
    const frames: Buffer[] = [];
    for (let i = 0; i < units; i++) frames.push(...c.unit!(i));
    const r = await sendSequence(tb, cli, veth.a.ifname, frames, PPS);
    sent = r.sent;
    elapsedNs = r.elapsedNs;
  }
  await sleep(150);
  const counts = await rx.snap();
  const run: Run = { sent, units, elapsedS: elapsedNs / 1e9, socket: countOf(counts, c.sock, c.src) };
  if (before) {
    const now = readCounters(ids);
    run.perRule = {};
    run.pass = 0;
    run.drop = 0;
    for (const id of ids) {
      const d = { pass: now.rules[id]!.pass - before.rules[id]!.pass, drop: now.rules[id]!.drop - before.rules[id]!.drop };
      run.perRule[id] = d;
      run.pass += d.pass;
      run.drop += d.drop;
    }
    run.global = {};
    run.globalPass = now.gpass - before.gpass;
    run.globalDrop = now.gdrop - before.gdrop;
    now.global.forEach((v, r) => {
      const d = v - before.global[r]!;
      if (d > 0) run.global![reasonName(r).toLowerCase()] = d;
    });
  }
  return run;
}

const limitOf = (c: Cls, r: Run): number => LIMITS[c.policy].burst + LIMITS[c.policy].rate * r.elapsedS + SLACK;

function describe(key: string): string {
  const e = results.get(key)!;
  const c = e.cls;
  const parts = [`[${key}] src ${c.src}, counted at ${c.sock}, kernel ${c.kernel}, policy ${c.policy} (${LIMITS[c.policy].rate}/s burst ${LIMITS[c.policy].burst})`];
  if (e.control) parts.push(`control (nothing attached): ${e.control.socket}/${e.control.units} ${c.unit ? 'datagrams' : 'frames'} delivered`);
  if (e.sluice) {
    const s = e.sluice;
    parts.push(`with Sluice (${STACK_OBJECT}): ${s.socket}/${s.units} reached the socket in ${s.elapsedS.toFixed(3)} s (limit ${limitOf(c, s).toFixed(0)}); ` +
      `counters: ${s.sent} frames sent, rules passed ${s.pass} dropped ${s.drop} ${JSON.stringify(s.perRule)}, ` +
      `global slot passed ${s.globalPass} dropped ${s.globalDrop}, reasons ${JSON.stringify(s.global)}`);
  }
  return parts.join('\n  ');
}

// ---------------------------------------------------------------------------------------------
// The test bed

async function sh(ns: string, cmd: string, ...args: string[]): Promise<void> {
  await tb.exec(ns, cmd, args, { check: true });
}

before(async () => {
  tb = new Testbed();
  cli = await tb.addNs('cli');
  srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv, { ipv4: ['10.88.0.1', '10.88.0.2'], prefix4: 16 });
  SRV4 = veth.b.ipv4;
  SRV6 = veth.b.ipv6;
  for (const k of ['net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', `net.ipv4.conf.${veth.b.ifname}.rp_filter=0`,
    'net.ipv4.ipfrag_high_thresh=134217728', 'net.ipv6.ip6frag_high_thresh=134217728']) {
    await sh(srv, 'sysctl', '-qw', k);
  }
  rx = await StackReceiver.start(tb, srv, { udpPorts: [UDP_PORT, DNS_PORT], raw4: [4, 6, 41, 47], raw6: [4, 6, 50, 51, 59], tcpListen: TCP_PORT });
  defineClasses();
});

after(async () => {
  try {
    link?.close();
    sluice?.coll.close();
    await rx?.stop();
  } finally {
    await tb?.cleanup();
  }
  const report = process.env['SLUICE_STACK_REPORT'];
  if (report) {
    writeFileSync(report, JSON.stringify([...results].map(([key, e]) => ({ key, sock: e.cls.sock, kernel: e.cls.kernel, policy: e.cls.policy, control: e.control, sluice: e.sluice })), null, 1));
  }
});

test('control: every class, with nothing attached', { timeout: 90_000 }, async () => {
  phaseIdBase = 1000;
  for (const [, e] of results) e.control = await runClass(e.cls, false);
});

test('with Sluice: every class under the token bucket (and UDP/53 under the strict policy)', { timeout: 90_000 }, async () => {
  phaseIdBase = 30000;
  sluice = await loadSluice();
  sluice.limiter.applyPolicy({ rules: MAIN });
  link = Link.attachXdp(sluice.coll.program('sluice_xdp'), veth.b.ifname, { netns: srv, mode: 'native' });
  await sleep(200); // the veth's NAPI comes up with the program
  for (const policy of ['main', 'strict'] as const) {
    if (policy === 'strict') sluice.limiter.applyPolicy({ rules: STRICT });
    for (const [, e] of results) if (e.cls.policy === policy) e.sluice = await runClass(e.cls, true);
  }
});

// One assertion per class (a subtest each), each printing its numbers.
test('per class: the kernel delivers it without Sluice, and with Sluice it stays within its limit', async (t) => {
  for (const key of results.keys()) {
    await t.test(key, () => {
      const e = results.get(key)!;
      const c = e.cls;
      const info = describe(key);
      assert.ok(e.control, `no control run\n  ${info}`);
      const ctlShare = e.control.socket / e.control.units;
      if (c.kernel === 'delivers') {
        assert.ok(ctlShare >= 0.95, `the kernel must deliver >= 95% without Sluice\n  ${info}`);
      } else {
        assert.ok(ctlShare < 0.95, `expected the kernel to drop this class by itself (judge it at the socket instead)\n  ${info}`);
      }
      assert.ok(e.sluice, `no run with Sluice\n  ${info}`);
      const s = e.sluice;
      const limit = limitOf(c, s);
      if (c.kernel === 'delivers') {
        assert.ok(s.socket <= limit, `${s.socket} reached the socket, more than the limit ${limit.toFixed(0)}\n  ${info}`);
      } else {
        // Every frame is charged to a rule, or dropped and counted (e.g. a first fragment too short
        // for its L4 header); what passes, anywhere, stays within the limit.
        const accounted = s.pass! + s.drop! + s.globalDrop!;
        assert.ok(accounted >= s.sent && accounted <= s.sent + NOISE,
          `every frame must be charged to a rule or dropped: ${s.pass! + s.drop!} charged to rules + ${s.globalDrop} dropped in the global slot, of ${s.sent} sent (${s.globalPass} passed uncharged)\n  ${info}`);
        const passed = s.pass! + s.globalPass!;
        assert.ok(passed <= limit, `${passed} frames passed (rules ${s.pass}, global slot ${s.globalPass}), more than the limit ${limit.toFixed(0)}\n  ${info}`);
      }
    });
  }
});

test('table: every class ran both with nothing attached and with Sluice', (t) => {
  const missing = [...results].filter(([, e]) => !e.control || !e.sluice).map(([key]) => key);
  assert.deepEqual(missing, [], 'classes with a run missing (nothing may be left out of the table)');
  assert.ok(results.size >= 80, `${results.size} classes`);
  const rows = [...results].map(([key, e]) => {
    const ctl = e.control ? `${e.control.socket}/${e.control.units}` : '-';
    const sl = e.sluice ? `${e.sluice.socket}/${e.sluice.units}` : '-';
    const lim = e.sluice ? limitOf(e.cls, e.sluice).toFixed(0) : '-';
    const cnt = e.sluice ? `rules pass ${e.sluice.pass} drop ${e.sluice.drop}, global pass ${e.sluice.globalPass} drop ${e.sluice.globalDrop} ${Object.entries(e.sluice.global ?? {}).map(([k, v]) => `${k}:${v}`).join(' ')}` : '';
    return `| ${key} | ${e.cls.sock} | ${ctl} | ${sl} | ${lim} | ${cnt} |`;
  });
  t.diagnostic(`object ${STACK_OBJECT}\n| class | socket | control | with Sluice | limit | Sluice counters |\n|---|---|---|---|---|---|\n${rows.join('\n')}`);
});
