/**
 * Packet fixtures as data: a description, a packet, the expected verdict, and the counters that
 * must move (and nothing else). Run through BPF_PROG_TEST_RUN by fixtures.test.ts; the same
 * packets drive the per-packet benchmark.
 */
import type { PolicySpec } from '../../src/limiter/policy';
import { IPPROTO, pkt } from '../lib/packet';

export type ReasonName =
  | 'PASS' | 'LIMIT' | 'DRYRUN' | 'BLOCKED' | 'CONTENDED' | 'NOSTATE' | 'MGMT' | 'DENYLIST' | 'ALLOWLIST'
  | 'NON_IP' | 'TRUNCATED' | 'BAD_IPV4' | 'BAD_IPV6' | 'VLAN_DEPTH' | 'TINY_FRAG' | 'EXT_CHAIN' | 'FRAG_ORPHAN'
  | 'UNCERTAIN';

export interface Fixture {
  name: string;
  packet: Buffer;
  /** Runs of the same packet (BPF_PROG_TEST_RUN repeat); the verdict is the last run's. */
  repeat?: number;
  /** Drop malformed packets instead of passing them. */
  malformedDrop?: boolean;
  verdict: 'pass' | 'drop';
  /** Counter changes: stats slot (a rule id, or the global slot), reason, packets. */
  counts: { slot: number | 'global'; reason: ReasonName; packets: number }[];
}

/** The policy the fixtures run under. */
export const FIXTURE_POLICY: PolicySpec = {
  rules: [
    { id: 0, alg: 'fixed', pps: 1000 },
    { id: 1, name: 'dns', src: ['10.1.0.0/16'], proto: IPPROTO.UDP, dport: [53, 53], alg: 'fixed', pps: 5 },
    { id: 2, name: 'v6-net', src: ['2001:db8:1::/48'], alg: 'token', pps: 1000 },
    { id: 3, name: 'syn', proto: IPPROTO.TCP, syn: true, alg: 'gcra', pps: 1000 },
    { id: 4, name: 'v6-host', src: ['2001:db8:1:2::7/128'], alg: 'sliding', pps: 3 },
  ],
};

const v4 = (src = '192.0.2.10', dst = '198.51.100.1') => pkt().eth().ipv4({ src, dst });
const v6 = (src = '2001:db8:ff::10', dst = '2001:db8:ee::1') => pkt().eth().ipv6({ src, dst });

// A fresh source per fixture keeps their states apart.
let n = 0;
const src4 = (): string => `192.0.2.${++n}`;
const src6 = (): string => `2001:db8:ff::${(++n).toString(16)}`;

export const FIXTURES: Fixture[] = [
  // Well-formed traffic reaches the limiter and the default rule.
  { name: 'IPv4 UDP', packet: v4(src4()).udp({ sport: 1000, dport: 80 }).payload(32).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv4 with 12 bytes of options (IHL 8), TCP ACK', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', options: new Uint8Array(12).fill(1) }).tcp({ sport: 1, dport: 2, flags: 'A' }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv4 first fragment (MF, offset 0)', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', mf: true }).udp({ sport: 1, dport: 2 }).payload(64).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv4 later fragment, its first unseen: the strictest rule of its source (here the default), counted as an orphan', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', fragOffset: 100, protocol: IPPROTO.UDP }).payload(64).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'FRAG_ORPHAN', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv4 ICMP echo', packet: v4(src4()).icmp({ type: 8 }).payload(56).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv6 UDP', packet: v6(src6()).udp({ sport: 1, dport: 2 }).payload(10).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv6 ICMPv6 echo', packet: v6(src6()).icmpv6({ type: 128 }).payload(8).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv6 hop-by-hop, destination options, routing, then UDP', packet: v6(src6()).hopByHop().destOpts({ options: new Uint8Array(14) }).routing().udp({ sport: 5, dport: 6 }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv6 first fragment then UDP', packet: v6(src6()).fragment6({ m: true }).udp({ sport: 5, dport: 6 }).payload(16).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv6 later fragment, its first unseen', packet: v6(src6()).fragment6({ offset: 10, next: IPPROTO.UDP }).payload(16).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'FRAG_ORPHAN', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv6 AH then TCP', packet: v6(src6()).ah().tcp({ sport: 1, dport: 2, flags: 'A' }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: '802.1Q tag then IPv4', packet: pkt().eth().vlan(100).ipv4({ src: src4(), dst: '198.51.100.1' }).udp({ sport: 1, dport: 2 }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: '802.1ad + 802.1Q (QinQ) then IPv6', packet: pkt().eth().svlan(10).vlan(20).ipv6({ src: src6(), dst: '2001:db8::1' }).udp({ sport: 1, dport: 2 }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },

  // Classification by source prefix, protocol, port and SYN.
  { name: 'UDP/53 from 10.1.0.0/16 -> rule dns', packet: v4('10.1.2.3').udp({ sport: 999, dport: 53 }).build(), verdict: 'pass', counts: [{ slot: 1, reason: 'PASS', packets: 1 }] },
  { name: 'UDP/54 from 10.1.0.0/16 -> default (port does not match)', packet: v4('10.1.2.4').udp({ sport: 999, dport: 54 }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'UDP/53 from 10.2.0.1 -> default (source does not match)', packet: v4('10.2.0.1').udp({ sport: 999, dport: 53 }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv6 from 2001:db8:1::/48 -> rule v6-net', packet: v6('2001:db8:1:5::9').udp({ sport: 1, dport: 2 }).build(), verdict: 'pass', counts: [{ slot: 2, reason: 'PASS', packets: 1 }] },
  { name: 'IPv6 from the /128 inside the /48 -> the longer prefix wins: rule v6-host', packet: v6('2001:db8:1:2::7').udp({ sport: 1, dport: 2 }).build(), verdict: 'pass', counts: [{ slot: 4, reason: 'PASS', packets: 1 }] },
  { name: 'TCP SYN from 2001:db8:1::/48 -> the prefix rule beats the source-less syn rule', packet: v6('2001:db8:1:3::1').tcp({ sport: 1, dport: 80, flags: 'S' }).build(), verdict: 'pass', counts: [{ slot: 2, reason: 'PASS', packets: 1 }] },
  { name: 'TCP SYN from anywhere -> rule syn', packet: v4(src4()).tcp({ sport: 1, dport: 80, flags: 'S' }).build(), verdict: 'pass', counts: [{ slot: 3, reason: 'PASS', packets: 1 }] },
  { name: 'TCP SYN+ACK -> default', packet: v4(src4()).tcp({ sport: 1, dport: 80, flags: 'SA' }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv6 TCP SYN -> rule syn', packet: v6(src6()).tcp({ sport: 1, dport: 80, flags: 'S' }).build(), verdict: 'pass', counts: [{ slot: 3, reason: 'PASS', packets: 1 }] },

  // Limits at a frozen clock.
  { name: '8 UDP/53 packets at one instant, limit 5 per window', packet: v4('10.1.9.9').udp({ sport: 1, dport: 53 }).build(), repeat: 8, verdict: 'drop', counts: [{ slot: 1, reason: 'PASS', packets: 5 }, { slot: 1, reason: 'LIMIT', packets: 3 }] },
  { name: 'IPv6 /48 rule: 1001 packets at one instant, token bucket burst 1000', packet: v6('2001:db8:1:77::1').udp({ sport: 1, dport: 2 }).build(), repeat: 1001, verdict: 'drop', counts: [{ slot: 2, reason: 'PASS', packets: 1000 }, { slot: 2, reason: 'LIMIT', packets: 1 }] },

  // Not IP: passed and counted.
  { name: 'ARP request', packet: pkt().eth({ dst: 'ff:ff:ff:ff:ff:ff' }).arp({ spa: '10.0.0.1', tpa: '10.0.0.2' }).build(), verdict: 'pass', counts: [{ slot: 'global', reason: 'NON_IP', packets: 1 }] },
  { name: 'LLDP frame', packet: pkt().eth({ dst: '01:80:c2:00:00:0e', type: 0x88cc }).raw(new Uint8Array(40)).build(), verdict: 'pass', counts: [{ slot: 'global', reason: 'NON_IP', packets: 1 }] },

  // Malformed: a reason each, the configured verdict.
  { name: 'three VLAN tags (0x88a8, 0x9100, 0x8100): parsed, limited', packet: pkt().eth().svlan(1).vlan({ vid: 2, tpid: 0x9100 }).vlan(3).ipv4({ src: src4(), dst: '198.51.100.1' }).udp({ sport: 1, dport: 2 }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'five VLAN tags: no source read, the malformed verdict', packet: pkt().eth().svlan(1).vlan(2).vlan(3).vlan(4).vlan(5).ipv4({ src: src4(), dst: '198.51.100.1' }).udp({ sport: 1, dport: 2 }).build(), verdict: 'pass', counts: [{ slot: 'global', reason: 'VLAN_DEPTH', packets: 1 }] },
  { name: 'IPv4 IHL 4', packet: v4(src4()).udp({ sport: 1, dport: 2 }).build().fill(0x44, 14, 15), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'BAD_IPV4', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv4 version 5', packet: v4(src4()).udp({ sport: 1, dport: 2 }).build().fill(0x55, 14, 15), verdict: 'pass', counts: [{ slot: 'global', reason: 'BAD_IPV4', packets: 1 }] },
  { name: 'IPv4 total length shorter than its header', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', totalLength: 12 }).udp({ sport: 1, dport: 2 }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'BAD_IPV4', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv4 total length past the end of the frame', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', totalLength: 1400 }).udp({ sport: 1, dport: 2 }).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'TRUNCATED', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv4 says TCP, carries 10 bytes', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', protocol: IPPROTO.TCP }).raw(new Uint8Array(10)).build(), verdict: 'pass', counts: [{ slot: 3, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'TRUNCATED', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv6 chain of nine destination-options headers', packet: (() => { let b = v6(src6()); for (let i = 0; i < 9; i++) b = b.destOpts(); return b.udp({ sport: 1, dport: 2 }).build(); })(), verdict: 'pass', counts: [{ slot: 3, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'EXT_CHAIN', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv6 hop-by-hop that points to itself forever', packet: v6(src6()).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).ext6({ type: IPPROTO.HOPOPTS, next: IPPROTO.HOPOPTS }).payload(64).build(), verdict: 'pass', counts: [{ slot: 3, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'EXT_CHAIN', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv6 extension header whose length runs past the frame', packet: v6(src6()).ext6({ type: IPPROTO.DSTOPTS, next: IPPROTO.UDP, hdrExtLen: 200 }).build(), verdict: 'pass', counts: [{ slot: 3, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'TRUNCATED', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv6 header cut at 20 bytes', packet: v6(src6()).udp({ sport: 1, dport: 2 }).truncate(34).build(), verdict: 'pass', counts: [{ slot: 'global', reason: 'TRUNCATED', packets: 1 }] },
  { name: 'IPv6 chain of eight destination-options headers: walked whole', packet: (() => { let b = v6(src6()); for (let i = 0; i < 8; i++) b = b.destOpts(); return b.udp({ sport: 1, dport: 2 }).build(); })(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },

  // Never a laxer rule for hiding the ports: the strictest rule the packet could match decides.
  { name: 'UDP from 2001:db8:1::/48 behind nine destination options: its prefix rule, as if its ports were read', packet: (() => { let b = pkt().eth().ipv6({ src: '2001:db8:1:9::1', dst: '2001:db8::1' }); for (let i = 0; i < 9; i++) b = b.destOpts(); return b.udp({ sport: 1, dport: 53 }).build(); })(), verdict: 'pass', counts: [{ slot: 2, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'EXT_CHAIN', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv4 later fragment from 10.1/16, first unseen: rule dns, the strictest of its source', packet: pkt().eth().ipv4({ src: '10.1.7.7', dst: '198.51.100.1', fragOffset: 20, id: 77, protocol: IPPROTO.UDP }).payload(64).build(), verdict: 'pass', counts: [{ slot: 1, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'FRAG_ORPHAN', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'IPv4 first fragment UDP/80 from 10.1/16: the default rule (recorded for its datagram)', packet: pkt().eth().ipv4({ src: '10.1.7.8', dst: '198.51.100.1', mf: true, id: 78 }).udp({ sport: 1, dport: 80 }).payload(64).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv4 later fragment of that datagram: decided where its first was (the default rule)', packet: pkt().eth().ipv4({ src: '10.1.7.8', dst: '198.51.100.1', fragOffset: 10, id: 78, protocol: IPPROTO.UDP }).payload(64).build(), verdict: 'pass', counts: [{ slot: 0, reason: 'PASS', packets: 1 }] },
  { name: 'IPv4 first fragment UDP/53 from 10.1/16 -> rule dns', packet: pkt().eth().ipv4({ src: '10.1.7.9', dst: '198.51.100.1', mf: true, id: 79 }).udp({ sport: 1, dport: 53 }).payload(64).build(), verdict: 'pass', counts: [{ slot: 1, reason: 'PASS', packets: 1 }] },
  { name: 'IPv4 later fragment of the UDP/53 datagram -> rule dns', packet: pkt().eth().ipv4({ src: '10.1.7.9', dst: '198.51.100.1', fragOffset: 10, id: 79, protocol: IPPROTO.UDP }).payload(64).build(), verdict: 'pass', counts: [{ slot: 1, reason: 'PASS', packets: 1 }] },
  { name: 'IPv4 tiny first fragment (UDP header cut by the fragment): dropped', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', mf: true, protocol: IPPROTO.UDP }).raw(new Uint8Array(4)).build(), verdict: 'drop', counts: [{ slot: 'global', reason: 'TINY_FRAG', packets: 1 }] },
  { name: 'IPv6 first fragment whose chain runs past it: dropped', packet: v6(src6()).fragment6({ m: true, next: IPPROTO.DSTOPTS }).ext6({ type: IPPROTO.DSTOPTS, next: IPPROTO.UDP, hdrExtLen: 20 }).build(), verdict: 'drop', counts: [{ slot: 'global', reason: 'TINY_FRAG', packets: 1 }] },
  { name: 'IPv4 with trailing Ethernet padding: L4 read within the IP length, not the frame', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', protocol: IPPROTO.TCP, totalLength: 24 }).raw(new Uint8Array(40).fill(2)).build(), verdict: 'pass', counts: [{ slot: 3, reason: 'PASS', packets: 1 }, { slot: 'global', reason: 'TRUNCATED', packets: 1 }, { slot: 'global', reason: 'UNCERTAIN', packets: 1 }] },
  { name: 'malformed, with malformed_drop set: dropped', packet: pkt().eth().ipv4({ src: src4(), dst: '198.51.100.1', totalLength: 1400 }).udp({ sport: 1, dport: 2 }).build(), malformedDrop: true, verdict: 'drop', counts: [{ slot: 'global', reason: 'TRUNCATED', packets: 1 }] },
];
