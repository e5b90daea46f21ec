/**
 * Malformed input: every prefix of a set of valid packets (a cut at each byte) through the real
 * kernel. Below 14 bytes the kernel refuses the frame (EINVAL) before the program runs; from 14
 * bytes on the program must give each cut a malformed reason and the configured verdict, and the
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

const MALFORMED = new Set<number>([Reason.TRUNCATED, Reason.BAD_IPV4, Reason.BAD_IPV6, Reason.VLAN_DEPTH]);

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
      dp.limiter.setConfig({ malformed_drop: malformedDrop ? 1 : 0 });
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
        assert.equal(m.length, 1, `${n} bytes: exactly one counter moves, got ${JSON.stringify(m, (_, v) => typeof v === 'bigint' ? Number(v) : v)}`);
        assert.equal(m[0]!.n, 1n);
        if (n === full.length) {
          assert.deepEqual([m[0]!.slot, m[0]!.reason, verdict], [0, Reason.PASS, 'pass'], 'the whole packet reaches its rule');
        } else {
          assert.equal(m[0]!.slot, 1, `${n} bytes: counted in the global slot`);
          assert.ok(MALFORMED.has(m[0]!.reason), `${n} bytes: a malformed reason, got ${m[0]!.reason}`);
          assert.equal(verdict, malformedDrop ? 'drop' : 'pass', `${n} bytes: the configured verdict`);
        }
      }
    });
  }
}
