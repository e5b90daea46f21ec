/**
 * Malformed input: every prefix of a set of valid packets (a cut at each byte) through the real
 * kernel. Below 14 bytes the kernel refuses the frame (EINVAL) before the program runs; from 14
 * bytes on the program must give each cut a malformed reason; a cut whose source address is whole
 * is still charged to its rule (never exempt), one without it gets the configured verdict, and the
 * whole packet its rule. Nothing may crash, pass unaccounted or reach the limiter half-parsed.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Reason, type Counters } from '../../src/generated/types';
import { assertProgramsUnloaded, TestDatapath } from '../lib/datapath';
import { IPPROTO, pkt } from '../lib/packet';

let dp: TestDatapath;
before(async () => {
  dp = await TestDatapath.load();
  dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 1n << 40n, ppsBurst: 1n << 34n }] });
  dp.setNow(1_000_000_000n);
});
after(async () => {
  dp?.close();
  await assertProgramsUnloaded();
});

const VALID: [string, Buffer][] = [
  ['IPv4 UDP', pkt().eth().ipv4({ src: '192.0.2.1', dst: '192.0.2.2' }).udp({ sport: 1, dport: 2 }).payload(20).build()],
  ['IPv4 with options, TCP with options', pkt().eth().ipv4({ src: '192.0.2.1', dst: '192.0.2.2', options: new Uint8Array(8).fill(1) }).tcp({ sport: 1, dport: 2, flags: 'S', options: new Uint8Array([2, 4, 5, 180]) }).build()],
  ['IPv4 ICMP behind an 802.1Q tag', pkt().eth().vlan(7).ipv4({ src: '192.0.2.1', dst: '192.0.2.2' }).icmp({ type: 8 }).payload(8).build()],
  ['IPv6 hop-by-hop, routing, fragment, TCP', pkt().eth().ipv6({ src: '2001:db8::1', dst: '2001:db8::2' }).hopByHop().routing().fragment6({ m: true }).tcp({ sport: 1, dport: 2, flags: 'S' }).build()],
  ['IPv6 AH, UDP, behind QinQ', pkt().eth().svlan(1).vlan(2).ipv6({ src: '2001:db8::1', dst: '2001:db8::2' }).ah().udp({ sport: 1, dport: 2 }).payload(6).build()],
  ['IPv6 ICMPv6', pkt().eth().ipv6({ src: '2001:db8::1', dst: '2001:db8::2', next: IPPROTO.ICMPV6 }).icmpv6({ type: 128 }).build()],
];

const MALFORMED = new Set<number>([Reason.TRUNCATED, Reason.BAD_IPV4, Reason.BAD_IPV6, Reason.VLAN_DEPTH, Reason.TINY_FRAG]);

/** Bytes up to the end of each packet's fixed IP header: from there on its source is known. */
const SOURCE_AT: Record<string, number> = {
  'IPv4 UDP': 34, 'IPv4 with options, TCP with options': 34, 'IPv4 ICMP behind an 802.1Q tag': 38,
  'IPv6 hop-by-hop, routing, fragment, TCP': 54, 'IPv6 AH, UDP, behind QinQ': 62, 'IPv6 ICMPv6': 54,
};

function moved(before: Counters[], afterC: Counters[]): { slot: number; reason: number; n: bigint }[] {
  const out: { slot: number; reason: number; n: bigint }[] = [];
  before.forEach((b, slot) => b.reason_packets.forEach((v, r) => {
    const n = afterC[slot]!.reason_packets[r]! - v;
    if (n !== 0n) out.push({ slot, reason: r, n });
  }));
  return out;
}

for (const malformedDrop of [false, true]) {
  for (const [name, full] of VALID) {
    test(`${name}: every cut from 0 to ${full.length} bytes${malformedDrop ? ', malformed dropped' : ''}`, async () => {
      dp.limiter.setMalformedDrop(!!malformedDrop);
      const slots = (): Counters[] => [dp.limiter.counters(0), dp.limiter.globalCounters()];
      for (let n = 0; n <= full.length; n++) {
        const cut = full.subarray(0, n);
        if (n < 14) {
          await assert.rejects(dp.run(cut), (e: { errnoName?: string }) => e.errnoName === 'EINVAL', `${n} bytes: the kernel refuses frames shorter than Ethernet`);
          continue;
        }
        const b = slots();
        const verdict = await dp.run(cut);
        const m = moved(b, slots());
        const show = JSON.stringify(m, (_, v) => typeof v === 'bigint' ? Number(v) : v);
        assert.ok(m.every((x) => x.n === 1n), `${n} bytes: each counter moves by one, got ${show}`);
        if (n === full.length) {
          assert.deepEqual([m.length, m[0]!.slot, m[0]!.reason, verdict], [1, 0, Reason.PASS, 'pass'], 'the whole packet reaches its rule');
          continue;
        }
        const bad = m.filter((x) => x.slot === 1 && MALFORMED.has(x.reason));
        assert.equal(bad.length, 1, `${n} bytes: one malformed reason in the global slot, got ${show}`);
        if (malformedDrop || bad[0]!.reason === Reason.TINY_FRAG) {
          // Dropped as configured (a first fragment too small for its headers always is).
          assert.equal(m.length, 1, `${n} bytes: only the malformed reason moves, got ${show}`);
          assert.equal(verdict, 'drop', `${n} bytes: dropped`);
        } else if (n < SOURCE_AT[name]!) {
          assert.equal(m.length, 1, `${n} bytes: no source to charge, only the malformed reason moves, got ${show}`);
          assert.equal(verdict, 'pass', `${n} bytes: the configured verdict`);
        } else {
          // The source is known: charged to its (strictest) rule, never exempt.
          const rest = m.filter((x) => x !== bad[0]).map((x) => [x.slot, x.reason]);
          assert.deepEqual(rest.sort(), [[0, Reason.PASS], [1, Reason.UNCERTAIN]].sort(), `${n} bytes: charged to the rule of its source, got ${show}`);
          assert.equal(verdict, 'pass', `${n} bytes: within the rule's limit`);
        }
      }
    });
  }
}
