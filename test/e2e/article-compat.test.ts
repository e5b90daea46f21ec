/**
 * Seed compatibility: the production object attached by iproute2 alone, with no control plane
 * (`ip link set dev IFACE xdp obj sluice.bpf.o sec xdp`), limits each source to 1,000 packets per
 * second with a fixed window. Checked on a veth pair between two namespaces this test creates,
 * by counting what arrives at a UDP receiver and what the program's own counters say.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { BpfMap } from '../../src/ebpf';
import { decodeCounters, Reason, SL_COUNTERS_SIZE } from '../../src/generated/types';
import { PROD_OBJECT } from '../lib/datapath';
import { assertNoLeftovers, run, Testbed } from '../lib/netns';
import { udpReceiver, udpSend } from '../lib/traffic';

const tb = new Testbed();
after(async () => {
  await tb.cleanup();
  await assertNoLeftovers();
});

test('ip link set dev IFACE xdp obj sluice.bpf.o sec xdp limits each source to 1000 packets per second', async () => {
  const cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  const veth = await tb.addVeth(cli, srv);

  const attach = await tb.exec(srv, 'ip', ['link', 'set', 'dev', veth.b.ifname, 'xdp', 'obj', PROD_OBJECT, 'sec', 'xdp']);
  assert.equal(attach.code, 0, `iproute2 attach failed: ${attach.stderr}`);
  const link = JSON.parse((await tb.exec(srv, 'ip', ['-j', 'link', 'show', 'dev', veth.b.ifname])).stdout)[0];
  const progId: number = link.xdp.prog.id;
  assert.ok(progId > 0, 'a program is attached');

  // Resolve the neighbour first so that no datagram waits in (or is dropped from) the ARP queue.
  await tb.exec(cli, 'ping', ['-c', '1', '-W', '1', veth.b.ipv4]);

  const rx = await udpReceiver(tb, srv, 9000, 3000);
  const { sent, ms } = await udpSend(tb, cli, veth.b.ipv4, 5000);
  const { received } = await rx.result();

  // Sent within well under a second, so the burst spans at most two fixed windows of 1000.
  assert.ok(ms < 900, `sending took ${ms} ms; the bound below assumes less than a second`);
  // The receiver's socket may overflow in a burst, so its count bounds the limiter's from below only.
  assert.ok(received <= 2000, `received ${received} of ${sent}: at most two windows of 1000`);

  // The program's own counters, found from the attached program's maps as bpftool would.
  const info = JSON.parse((await run('bpftool', ['-j', 'prog', 'show', 'id', String(progId)])).stdout) as { map_ids: number[] };
  let statsId = 0;
  for (const id of info.map_ids) {
    const m = JSON.parse((await run('bpftool', ['-j', 'map', 'show', 'id', String(id)])).stdout) as { name: string };
    if (m.name === 'stats_map') statsId = id;
  }
  assert.ok(statsId > 0, 'stats_map is found by name');
  const dump = await run('bpftool', ['map', 'dump', 'id', String(statsId)]);
  assert.equal(dump.code, 0);
  assert.match(dump.stdout, /reason_packets/, 'bpftool shows the counters with their field names (BTF)');

  const stats = BpfMap.fromId(statsId);
  try {
    const totals = stats.lookupPerCpu(Buffer.alloc(4)).map((b) => decodeCounters(b.subarray(0, SL_COUNTERS_SIZE)));
    const dropped = totals.reduce((s, c) => s + Number(c.reason_packets[Reason.LIMIT]), 0);
    const passed = totals.reduce((s, c) => s + Number(c.reason_packets[Reason.PASS]), 0);
    // Everything the receiver got passed the limiter; every datagram was decided one way or the other
    // (plus the ping and a few packets of neighbour discovery from the same sources).
    assert.ok(passed >= received, `limiter passed ${passed}, receiver got ${received}`);
    assert.ok(passed >= 1000 && passed <= 2000 + 5, `limiter passed ${passed}: one or two windows of 1000`);
    assert.ok(passed + dropped >= sent && passed + dropped <= sent + 10, `limiter decided ${passed + dropped} of ${sent} sent`);
  } finally {
    stats.close();
  }

  const off = await tb.exec(srv, 'ip', ['link', 'set', 'dev', veth.b.ifname, 'xdp', 'off']);
  assert.equal(off.code, 0);
});
