// Tests for the packet builder: hand-derived reference bytes, checksum validity recomputed here
// independently of the builder, and (when tcpdump is installed) a third-party decoder's verdict.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  bytesToIp,
  ETH_P,
  hexToBytes,
  IPPROTO,
  ipv4ToBytes,
  ipv6ToBytes,
  maskPrefix,
  pkt,
  TCP_FLAGS,
} from '../lib/packet';

// --- An independent checker: plain RFC 1071 sum, written without the builder's helpers. ---------

function csum(buf: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < buf.length; i += 2) s += (buf[i]! << 8) | (i + 1 < buf.length ? buf[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** Checksum over pseudo-header + L4 segment; 0 when the segment's checksum is right. */
function l4Verify(src: Buffer, dst: Buffer, proto: number, seg: Buffer): number {
  let ph: Buffer;
  if (src.length === 4) {
    ph = Buffer.alloc(12);
    src.copy(ph, 0);
    dst.copy(ph, 4);
    ph[9] = proto;
    ph.writeUInt16BE(seg.length, 10);
  } else {
    ph = Buffer.alloc(40);
    src.copy(ph, 0);
    dst.copy(ph, 16);
    ph.writeUInt32BE(seg.length, 32);
    ph[39] = proto;
  }
  return csum(Buffer.concat([ph, seg]));
}

test('hand-derived frame: eth + 802.1Q + IPv4 + UDP + 4 bytes', () => {
  // Derived by hand from RFC 791 / RFC 768 layouts:
  //   IPv4 sum = 4500+0020+0000+0000+4011+0a00+0001+0a00+0002 = 0x9934 -> ~ = 0x66cb
  //   UDP  sum = pseudo(0a00+0001+0a00+0002+0011+000c) + 04d2+0035+000c + 0001+0203 = 0x1b37 -> ~ = 0xe4c8
  const expected = hexToBytes(`
    02 00 00 00 00 02  02 00 00 00 00 01  81 00  00 64  08 00
    45 00 00 20 00 00 00 00 40 11 66 cb 0a 00 00 01 0a 00 00 02
    04 d2 00 35 00 0c e4 c8
    00 01 02 03`);
  const got = pkt().eth().vlan(100).ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }).udp({ sport: 1234, dport: 53 }).payload(4).build();
  assert.equal(got.toString('hex'), expected.toString('hex'));
});

test('IPv4 header matches the classic worked checksum example (0xb861)', () => {
  // 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7: the worked example for the IPv4 header
  // checksum (192.168.0.1 -> 192.168.0.199, DF, TTL 64, UDP, total length 115).
  const b = pkt()
    .ipv4({ src: '192.168.0.1', dst: '192.168.0.199', df: true })
    .udp({ sport: 1, dport: 2 })
    .payload(115 - 28)
    .build();
  assert.equal(b.subarray(0, 20).toString('hex'), '450000730000400040 11b861c0a80001c0a800c7'.replace(/ /g, ''));
});

test('IPv4 header checksum verifies to 0 for every IHL, and can be corrupted or overridden', () => {
  for (let optLen = 0; optLen <= 40; optLen += 3) {
    const opts = Array.from({ length: optLen }, (_, i) => (i * 37 + 1) & 0xff);
    const b = pkt()
      .ipv4({ src: '172.16.5.4', dst: '8.8.8.8', ttl: 3, id: 0xbeef, tos: 0x2e, options: opts })
      .payload(11)
      .build();
    const ihl = b[0]! & 0xf;
    assert.equal(ihl, 5 + Math.ceil(optLen / 4), `IHL for ${optLen} option bytes`);
    assert.equal(b.readUInt16BE(2), ihl * 4 + 11, 'total length');
    assert.deepEqual([...b.subarray(20, 20 + optLen)], opts, 'option bytes in place');
    assert.equal(csum(b.subarray(0, ihl * 4)), 0, `checksum with ${optLen} option bytes`);
  }
  const bad = pkt().ipv4({ src: '1.2.3.4', dst: '5.6.7.8', badChecksum: true }).build();
  assert.notEqual(csum(bad.subarray(0, 20)), 0);
  const fixed = pkt().ipv4({ src: '1.2.3.4', dst: '5.6.7.8', checksum: 0x1234 }).build();
  assert.equal(fixed.readUInt16BE(10), 0x1234);
});

test('IPv4 flags, fragment offset, protocol, total length and IHL overrides', () => {
  const b = pkt()
    .ipv4({ src: '10.1.2.3', dst: '10.3.2.1', df: true, mf: true, reservedFlag: true, fragOffset: 0x1abc, id: 7 })
    .udp({ sport: 9, dport: 9 })
    .build();
  assert.equal(b.readUInt16BE(6), 0x8000 | 0x4000 | 0x2000 | 0x1abc);
  assert.equal(b.readUInt16BE(4), 7);
  assert.equal(b[9], IPPROTO.UDP);
  assert.deepEqual([...b.subarray(12, 16)], [10, 1, 2, 3]);

  const o = pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2', protocol: 99, totalLength: 9999, ihl: 4 }).tcp({ sport: 1, dport: 2 }).build();
  assert.equal(o[9], 99);
  assert.equal(o.readUInt16BE(2), 9999);
  assert.equal(o[0], 0x44);
  assert.equal(o.length, 40, 'the header is still 20 bytes even though IHL lies');
  assert.equal(csum(o.subarray(0, 20)), 0, 'checksum is computed over what was written');

  assert.equal(pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).build()[9], IPPROTO.EXP, 'nothing follows');
  assert.equal(pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).ipv6({ src: '::1', dst: '::2' }).build()[9], IPPROTO.IPV6);
  assert.throws(() => pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2', fragOffset: 0x2000 }), RangeError);
  assert.throws(() => pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2', options: new Uint8Array(41) }), RangeError);
});

test('UDP checksum and length are right over IPv4 and IPv6, odd payloads included', () => {
  for (const n of [0, 1, 2, 7, 100, 1401]) {
    const v4 = pkt().eth().ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }).udp({ sport: 5000, dport: 53 }).payload(n).build();
    const seg4 = v4.subarray(34);
    assert.equal(seg4.readUInt16BE(4), 8 + n);
    assert.equal(l4Verify(ipv4ToBytes('10.0.0.1'), ipv4ToBytes('10.0.0.2'), 17, seg4), 0, `v4 n=${n}`);

    const v6 = pkt().eth().ipv6({ src: '2001:db8::1', dst: 'fd00:1::ffff' }).udp({ sport: 5000, dport: 53 }).payload(n).build();
    const seg6 = v6.subarray(54);
    assert.equal(v6.readUInt16BE(18), 8 + n, 'IPv6 payload length');
    assert.equal(seg6.readUInt16BE(4), 8 + n);
    assert.equal(l4Verify(ipv6ToBytes('2001:db8::1'), ipv6ToBytes('fd00:1::ffff'), 17, seg6), 0, `v6 n=${n}`);
  }
  const noCsum = pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).udp({ sport: 1, dport: 2, noChecksum: true }).build();
  assert.equal(noCsum.readUInt16BE(26), 0);
  const bad = pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).udp({ sport: 1, dport: 2, badChecksum: true }).payload(3).build();
  assert.notEqual(l4Verify(ipv4ToBytes('1.1.1.1'), ipv4ToBytes('2.2.2.2'), 17, bad.subarray(20)), 0);
  const len = pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).udp({ sport: 1, dport: 2, length: 3 }).payload(10).build();
  assert.equal(len.readUInt16BE(24), 3);
  assert.equal(len.readUInt16BE(2), 38, 'IP total length still counts every byte');
});

test('UDP checksum over IPv6 with extension headers uses the upper-layer length only', () => {
  const b = pkt().ipv6({ src: 'fe80::1', dst: 'ff02::1' }).hopByHop().destOpts().udp({ sport: 1, dport: 2 }).payload(5).build();
  assert.equal(b.readUInt16BE(4), 8 + 8 + 8 + 5);
  assert.equal(l4Verify(ipv6ToBytes('fe80::1'), ipv6ToBytes('ff02::1'), 17, b.subarray(56)), 0);
});

test('TCP: flags, data offset, options, checksum over v4 and v6', () => {
  const b = pkt()
    .ipv4({ src: '10.0.0.1', dst: '10.0.0.2' })
    .tcp({ sport: 443, dport: 50000, seq: 0xdeadbeef, ack: 1, flags: 'SA', options: [2, 4, 0x05, 0xb4, 1], window: 1000 })
    .payload(3)
    .build();
  const t = b.subarray(20);
  assert.equal(t.readUInt16BE(0), 443);
  assert.equal(t.readUInt16BE(2), 50000);
  assert.equal(t.readUInt32BE(4), 0xdeadbeef);
  assert.equal(t.readUInt32BE(8), 1);
  assert.equal(t[12]! >> 4, 7, 'data offset: 20 + 5 option bytes padded to 8 = 28 bytes');
  assert.equal(t[13], TCP_FLAGS.SYN | TCP_FLAGS.ACK);
  assert.equal(t.readUInt16BE(14), 1000);
  assert.deepEqual([...t.subarray(20, 28)], [2, 4, 5, 0xb4, 1, 0, 0, 0]);
  assert.equal(l4Verify(ipv4ToBytes('10.0.0.1'), ipv4ToBytes('10.0.0.2'), 6, t), 0);

  const f = (flags: number | string): number =>
    pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).tcp({ sport: 1, dport: 2, flags }).build()[33]!;
  assert.equal(f('R'), TCP_FLAGS.RST);
  assert.equal(f('fa'), TCP_FLAGS.FIN | TCP_FLAGS.ACK);
  assert.equal(f('FSRPAUEC'), 0xff);
  assert.equal(f(0x29), 0x29);
  assert.throws(() => f('X'), TypeError);

  const d = pkt().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).tcp({ sport: 1, dport: 2, dataOffset: 15 }).build();
  assert.equal(d[32]! >> 4, 15);
  assert.equal(d.length, 40);

  const v6 = pkt().ipv6({ src: 'fd00::a', dst: 'fd00::b' }).tcp({ sport: 1, dport: 2, flags: 'F' }).payload(9).build();
  assert.equal(v6[6], IPPROTO.TCP);
  assert.equal(l4Verify(ipv6ToBytes('fd00::a'), ipv6ToBytes('fd00::b'), 6, v6.subarray(40)), 0);
});

test('ICMP and ICMPv6 headers and checksums', () => {
  const b = pkt().ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }).icmp({ id: 0x1234, seq: 9 }).payload(5).build();
  assert.equal(b[9], IPPROTO.ICMP);
  assert.deepEqual([...b.subarray(20, 22)], [8, 0]);
  assert.equal(b.readUInt16BE(24), 0x1234);
  assert.equal(b.readUInt16BE(26), 9);
  assert.equal(csum(b.subarray(20)), 0, 'ICMP checksum covers the message only');
  const u = pkt().ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }).icmp({ type: 3, code: 4 }).build();
  assert.deepEqual([...u.subarray(20, 22)], [3, 4]);

  const v6 = pkt().ipv6({ src: 'fd00::1', dst: 'fd00::2' }).icmpv6({ id: 1, seq: 2 }).payload(3).build();
  assert.equal(v6[6], IPPROTO.ICMPV6);
  assert.equal(v6[40], 128);
  assert.equal(l4Verify(ipv6ToBytes('fd00::1'), ipv6ToBytes('fd00::2'), 58, v6.subarray(40)), 0);
});

test('VLAN stacking: three tags with 802.1ad outer, TPIDs chained, PCP/DEI in the TCI', () => {
  const b = pkt()
    .eth({ dst: 'ff:ff:ff:ff:ff:ff', src: '02:aa:bb:cc:dd:ee' })
    .svlan(10)
    .vlan({ vid: 20, pcp: 5, dei: true })
    .vlan(4095)
    .ipv4({ src: '10.0.0.1', dst: '10.0.0.2' })
    .build();
  assert.equal(b.subarray(0, 6).toString('hex'), 'ffffffffffff');
  assert.equal(b.subarray(6, 12).toString('hex'), '02aabbccddee');
  assert.equal(b.readUInt16BE(12), ETH_P.QINQ);
  assert.equal(b.readUInt16BE(14), 10);
  assert.equal(b.readUInt16BE(16), ETH_P.VLAN);
  assert.equal(b.readUInt16BE(18), (5 << 13) | 0x1000 | 20);
  assert.equal(b.readUInt16BE(20), ETH_P.VLAN);
  assert.equal(b.readUInt16BE(22), 4095);
  assert.equal(b.readUInt16BE(24), ETH_P.IPV4);
  assert.equal(b[26], 0x45);
  assert.equal(b.length, 26 + 20);
  const p = pkt().eth().vlan(1).vlan(2).ipv6({ src: '::1', dst: '::2' });
  assert.deepEqual(
    p.buildWithLayout().layers.map((l) => [l.kind, l.offset, l.length]),
    [['eth', 0, 14], ['vlan', 14, 4], ['vlan', 18, 4], ['ipv6', 22, 40]],
  );
  assert.equal(p.offsetOf('vlan', 1), 18);
  assert.throws(() => pkt().vlan(4096), RangeError);
});

test('IPv6 extension header chain: next-header values, lengths, fragment fields, AH', () => {
  const p = pkt()
    .eth()
    .ipv6({ src: 'fd00::1', dst: 'fd00::2', hopLimit: 7, flowLabel: 0xabcde, trafficClass: 0xb8 })
    .hopByHop()
    .routing({ segmentsLeft: 0, addresses: ['fd00::9'] })
    .fragment6({ offset: 0x123, m: true, id: 0xcafef00d })
    .destOpts({ options: [0x01, 0x0c, ...new Array<number>(12).fill(0)] })
    .ah()
    .udp({ sport: 1, dport: 2 })
    .payload(4);
  const { buf: b, layers } = p.buildWithLayout();
  assert.equal(b.readUInt32BE(14), (6 << 28) | (0xb8 << 20) | 0xabcde);
  assert.equal(b[21], 7);
  assert.equal(b.readUInt16BE(18), b.length - 54, 'payload length counts every extension header');
  const at = (k: string): number => layers.find((l) => l.kind === k)!.offset;
  assert.equal(b[20], IPPROTO.HOPOPTS);
  assert.equal(b[at('hopbyhop')], IPPROTO.ROUTING);
  assert.equal(b[at('hopbyhop') + 1], 0, 'hop-by-hop is 8 bytes');
  assert.equal(b[at('routing')], IPPROTO.FRAGMENT);
  assert.equal(b[at('routing') + 1], 2, 'routing header: 8 + 16 address bytes = 24 = (2+1)*8');
  assert.equal(b.subarray(at('routing') + 8, at('routing') + 24).toString('hex'), 'fd000000000000000000000000000009');
  assert.equal(b[at('fragment')], IPPROTO.DSTOPTS);
  assert.equal(b.readUInt16BE(at('fragment') + 2), (0x123 << 3) | 1);
  assert.equal(b.readUInt32BE(at('fragment') + 4), 0xcafef00d);
  assert.equal(b[at('dstopts')], IPPROTO.AH);
  assert.equal(b[at('dstopts') + 1], 1, 'dest opts: 2 + 14 option bytes = 16');
  assert.equal(b[at('ah')], IPPROTO.UDP);
  assert.equal(b[at('ah') + 1], 4, 'AH with a 12-byte ICV: 24 bytes = (4+2)*4');
  assert.equal(at('udp') - at('ah'), 24);
  for (const k of ['hopbyhop', 'routing', 'fragment', 'dstopts', 'ah']) {
    const l = layers.find((x) => x.kind === k)!;
    assert.equal(l.length % 8, 0, `${k} is a multiple of 8 bytes`);
  }
  assert.equal(pkt().ipv6({ src: '::1', dst: '::2' }).build()[6], IPPROTO.NONE, 'nothing follows');
  assert.equal(pkt().ipv6({ src: '::1', dst: '::2' }).hopByHop().build()[40], IPPROTO.NONE);
});

test('bogus, looping and long extension header chains', () => {
  // A destination options header that claims a hop-by-hop header follows, and that one claims
  // another destination options header: a loop as far as a parser can tell.
  const loop = pkt()
    .ipv6({ src: '::1', dst: '::2' })
    .destOpts({ next: IPPROTO.HOPOPTS })
    .hopByHop({ next: IPPROTO.DSTOPTS })
    .build();
  assert.equal(loop[6], IPPROTO.DSTOPTS);
  assert.equal(loop[40], IPPROTO.HOPOPTS);
  assert.equal(loop[48], IPPROTO.DSTOPTS);
  assert.equal(loop.length, 56);

  const unknown = pkt().ipv6({ src: '::1', dst: '::2' }).ext6({ type: 200, data: [1, 2, 3, 4, 5, 6, 7, 8, 9] }).udp({ sport: 1, dport: 2 }).build();
  assert.equal(unknown[6], 200);
  assert.equal(unknown[40], IPPROTO.UDP);
  assert.equal(unknown[41], 1, '2 + 9 bytes padded to 16');
  assert.equal(unknown.length, 40 + 16 + 8);

  const p = pkt().ipv6({ src: '::1', dst: '::2' });
  for (let i = 0; i < 20; i++) p.destOpts();
  p.tcp({ sport: 1, dport: 2 });
  const long = p.build();
  assert.equal(long[6], IPPROTO.DSTOPTS);
  for (let i = 0; i < 19; i++) assert.equal(long[40 + i * 8], IPPROTO.DSTOPTS);
  assert.equal(long[40 + 19 * 8], IPPROTO.TCP);
  assert.equal(long.readUInt16BE(4), 20 * 8 + 20);

  const lenLie = pkt().ipv6({ src: '::1', dst: '::2' }).hopByHop({ hdrExtLen: 200 }).build();
  assert.equal(lenLie[41], 200);
  assert.equal(lenLie.length, 48);

  const frag = pkt().ipv6({ src: '::1', dst: '::2' }).fragment6({ next: 0xff, res: 3, reserved: 0x5a }).build();
  assert.equal(frag[40], 0xff);
  assert.equal(frag[41], 0x5a);
  assert.equal(frag.readUInt16BE(42), 6);
});

test('length overrides, truncate, bytes and trailer', () => {
  const full = pkt().eth().ipv6({ src: '::1', dst: '::2', payloadLength: 1 }).udp({ sport: 1, dport: 2 }).payload(10);
  assert.equal(full.build().readUInt16BE(18), 1);
  const p = pkt().eth().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).tcp({ sport: 1, dport: 2 }).payload(100);
  const whole = p.build();
  assert.equal(whole.length, 14 + 20 + 20 + 100);
  assert.deepEqual(p.bytes(20), whole.subarray(0, 20));
  p.truncate(40);
  const cut = p.build();
  assert.equal(cut.length, 40);
  assert.equal(cut.readUInt16BE(16), 140, 'a truncated packet still claims its full length');
  assert.deepEqual(cut, whole.subarray(0, 40));
  const t = pkt().eth().ipv4({ src: '1.1.1.1', dst: '2.2.2.2' }).udp({ sport: 1, dport: 2 }).trailer([0xde, 0xad]).build();
  assert.equal(t.length, 14 + 28 + 2);
  assert.equal(t.readUInt16BE(16), 28, 'trailer is not counted');
  assert.equal(t.readUInt16BE(38), 8);
  assert.equal(l4Verify(ipv4ToBytes('1.1.1.1'), ipv4ToBytes('2.2.2.2'), 17, t.subarray(34, 42)), 0);
  assert.deepEqual([...pkt().payload(300).build().subarray(254, 258)], [254, 255, 0, 1]);
  assert.deepEqual([...pkt().payload(3, 0xaa).build()], [0xaa, 0xaa, 0xaa]);
});

test('non-IP frames: ARP, LLDP raw, unknown ethertype', () => {
  const arp = pkt().eth({ dst: 'ff:ff:ff:ff:ff:ff' }).arp({ spa: '10.0.0.1', tpa: '10.0.0.2' }).build();
  assert.equal(arp.readUInt16BE(12), ETH_P.ARP);
  assert.equal(arp.subarray(14).toString('hex'), '0001 0800 06 04 0001 020000000001 0a000001 000000000000 0a000002'.replace(/ /g, ''));
  const lldp = pkt().eth({ dst: '01:80:c2:00:00:0e', type: ETH_P.LLDP }).raw('02 07 04 00 11 22 33 44 55 00 00').build();
  assert.equal(lldp.readUInt16BE(12), 0x88cc);
  assert.equal(lldp.subarray(14).toString('hex'), '0207040011223344550000');
  assert.equal(pkt().eth().raw([1, 2]).build().readUInt16BE(12), ETH_P.LOCAL_EXP);
  assert.equal(pkt().eth({ type: 0x0806 }).raw(new Uint8Array(28)).build().length, 42);
  assert.throws(() => pkt().raw('abc'), TypeError);
});

test('address helpers', () => {
  assert.deepEqual([...ipv4ToBytes('192.168.0.255')], [192, 168, 0, 255]);
  for (const bad of ['1.2.3', '1.2.3.4.5', '256.1.1.1', '01.1.1.1', '1.1.1.', 'a.b.c.d', '']) {
    assert.throws(() => ipv4ToBytes(bad), TypeError, bad);
  }
  const cases: Array<[string, string]> = [
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['1::', '00010000000000000000000000000000'],
    ['fe80::1:2', 'fe800000000000000000000000010002'],
    ['2001:DB8:0:0:1:0:0:1', '20010db8000000000001000000000001'],
    ['::ffff:10.0.0.1', '00000000000000000000ffff0a000001'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'],
  ];
  for (const [text, hex] of cases) assert.equal(ipv6ToBytes(text).toString('hex'), hex, text);
  for (const bad of [':::', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '12345::', 'g::', '::1.2.3', ':1::', '1:2:3:4:5:6:7:8::']) {
    assert.throws(() => ipv6ToBytes(bad), TypeError, bad);
  }
  // RFC 5952 text, checked against the WHATWG URL serializer, which also compresses the first
  // longest run of two or more zero groups.
  let seed = 12345;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) >>> 16;
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.alloc(16);
    for (let w = 0; w < 8; w++) if (rnd() % 3 !== 0) b.writeUInt16BE(rnd() % 4 === 0 ? rnd() & 0xf : rnd(), w * 2);
    if (b.subarray(0, 10).every((x) => x === 0) && b.readUInt16BE(10) === 0xffff) continue;
    const text = bytesToIp(b);
    assert.equal(`[${text}]`, new URL(`http://[${text}]/`).hostname, `canonical form of ${b.toString('hex')}`);
    assert.deepEqual(ipv6ToBytes(text), b);
  }
  assert.equal(bytesToIp(ipv6ToBytes('2001:db8:0:0:1:0:0:1')), '2001:db8::1:0:0:1');
  assert.equal(bytesToIp(ipv6ToBytes('2001:db8:0:1:1:1:1:1')), '2001:db8:0:1:1:1:1:1', 'one zero group stays');
  assert.equal(bytesToIp(ipv6ToBytes('::ffff:1.2.3.4')), '::ffff:1.2.3.4');
  assert.equal(bytesToIp(Buffer.from([10, 0, 0, 1])), '10.0.0.1');
  assert.throws(() => bytesToIp(new Uint8Array(5)), TypeError);

  assert.deepEqual([...maskPrefix(ipv4ToBytes('10.1.255.255'), 20)], [10, 1, 240, 0]);
  assert.deepEqual([...maskPrefix(ipv4ToBytes('10.1.255.255'), 0)], [0, 0, 0, 0]);
  assert.deepEqual([...maskPrefix(ipv4ToBytes('10.1.255.255'), 32)], [10, 1, 255, 255]);
  assert.equal(bytesToIp(maskPrefix(ipv6ToBytes('2001:db8:ffff:ffff::1'), 48)), '2001:db8:ffff::');
  assert.equal(bytesToIp(maskPrefix(ipv6ToBytes('2001:db8:ffff:ffff::1'), 63)), '2001:db8:ffff:fffe::');
  const src = ipv4ToBytes('1.2.3.4');
  maskPrefix(src, 8);
  assert.deepEqual([...src], [1, 2, 3, 4], 'maskPrefix does not modify its input');
  assert.throws(() => maskPrefix(src, 33), RangeError);
});

test('tcpdump agrees that the checksums are right (and that corrupted ones are wrong)', (t) => {
  try {
    execFileSync('tcpdump', ['--version'], { stdio: 'ignore' });
  } catch {
    t.skip('tcpdump not installed (apt-get install tcpdump): third-party cross-check skipped');
    return;
  }
  const good = [
    pkt().eth().vlan(100).ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }).udp({ sport: 1234, dport: 5353 }).payload(33).build(),
    pkt().eth().ipv4({ src: '10.0.0.1', dst: '10.0.0.2', options: [1, 1, 1] }).tcp({ sport: 1, dport: 80, flags: 'SA', options: [2, 4, 5, 0xb4] }).payload(7).build(),
    pkt().eth().ipv6({ src: 'fd00::1', dst: 'fd00::2' }).hopByHop().destOpts().udp({ sport: 1, dport: 2 }).payload(13).build(),
    pkt().eth().ipv6({ src: 'fd00::1', dst: 'fd00::2' }).tcp({ sport: 1, dport: 2 }).payload(9).build(),
    pkt().eth().ipv6({ src: 'fd00::1', dst: 'fd00::2' }).icmpv6({ id: 7, seq: 1 }).payload(9).build(),
    pkt().eth().ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }).icmp({ id: 7, seq: 1 }).payload(9).build(),
  ];
  const bad = [
    pkt().eth().ipv4({ src: '10.0.0.1', dst: '10.0.0.2', badChecksum: true }).udp({ sport: 1, dport: 2, badChecksum: true }).payload(9).build(),
    pkt().eth().ipv6({ src: 'fd00::1', dst: 'fd00::2' }).tcp({ sport: 1, dport: 2, badChecksum: true }).build(),
    pkt().eth().ipv4({ src: '10.0.0.1', dst: '10.0.0.2' }).icmp({ badChecksum: true }).build(),
    pkt().eth().ipv6({ src: 'fd00::1', dst: 'fd00::2' }).icmpv6({ badChecksum: true }).build(),
  ];
  const decode = (pkts: Buffer[]): string[] => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-pcap-'));
    try {
      const hdr = Buffer.alloc(24);
      hdr.writeUInt32LE(0xa1b2c3d4, 0);
      hdr.writeUInt16LE(2, 4);
      hdr.writeUInt16LE(4, 6);
      hdr.writeUInt32LE(65535, 16);
      hdr.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
      const parts: Buffer[] = [hdr];
      for (const b of pkts) {
        const rec = Buffer.alloc(16);
        rec.writeUInt32LE(b.length, 8);
        rec.writeUInt32LE(b.length, 12);
        parts.push(rec, b);
      }
      writeFileSync(join(dir, 'p.pcap'), Buffer.concat(parts));
      const out = execFileSync('tcpdump', ['-nn', '-vvv', '-r', join(dir, 'p.pcap')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      // One record per packet: continuation lines start with whitespace.
      return out.split(/\n(?=\S)/).filter((s) => s.trim() !== '');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const okRe = /udp sum ok|cksum 0x[0-9a-f]+ \(correct\)|icmp6 sum ok/;
  const badRe = /bad cksum|bad udp cksum|incorrect|wrong icmp cksum|bad icmp6 cksum/;
  const g = decode(good);
  assert.equal(g.length, good.length);
  g.forEach((line, i) => {
    assert.doesNotMatch(line, badRe, `packet ${i}: ${line}`);
    if (i !== 5) assert.match(line, okRe, `packet ${i}: ${line}`); // tcpdump only reports bad ICMPv4 sums
  });
  const b = decode(bad);
  assert.equal(b.length, bad.length);
  b.forEach((line, i) => assert.match(line, badRe, `corrupted packet ${i}: ${line}`));
  assert.match(b[0]!, /bad cksum/, 'IPv4 header checksum corrupted too');
});
