/**
 * Seed compatibility: the production object attached by iproute2 alone, with no control plane
 * (`ip link set dev IFACE xdp obj sluice.bpf.o sec xdp`), limits each source to 1,000 packets per
 * second with a fixed window. Checked on a veth pair between two namespaces this test creates,
 * by counting what arrives at a UDP receiver and what the program's own counters say.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { BpfMap } from '../../src/ebpf';
import { decodeCounters, Reason, SL_COUNTERS_SIZE } from '../../src/generated/types';
import { PROD_OBJECT } from '../lib/datapath';
import { assertNoLeftovers, run, Testbed } from '../lib/netns';

const tb = new Testbed();
after(async () => {
  await tb.cleanup();
  await assertNoLeftovers();
});

const RECEIVER = `
const s = require('dgram').createSocket('udp4');
let n = 0;
s.on('message', () => n++);
s.bind(9000, () => process.stdout.write('ready\\n'));
setTimeout(() => { process.stdout.write(JSON.stringify({ received: n }) + '\\n'); process.exit(0); }, Number(process.argv[1]));
`;

// Sends N datagrams as fast as the socket takes them, awaiting each batch so none is dropped locally.
const SENDER = `
const s = require('dgram').createSocket('udp4');
const [dst, n] = [process.argv[1], Number(process.argv[2])];
const buf = Buffer.alloc(32);
let sent = 0;
const t0 = process.hrtime.bigint();
(async () => {
  while (sent < n) {
    const batch = Math.min(100, n - sent);
    await Promise.all(Array.from({ length: batch }, () => new Promise((res, rej) => s.send(buf, 9000, dst, (e) => e ? rej(e) : res()))));
    sent += batch;
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(JSON.stringify({ sent, ms }) + '\\n');
  s.close();
})();
`;

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

  const rx = tb.spawn(srv, process.execPath, ['-e', RECEIVER, '3000']);
  let rxOut = '';
  rx.stdout!.on('data', (d: Buffer) => { rxOut += d.toString(); });
  while (!rxOut.includes('ready')) await once(rx.stdout!, 'data');

  const tx = await tb.exec(cli, process.execPath, ['-e', SENDER, veth.b.ipv4, '5000'], { timeoutMs: 20_000 });
  assert.equal(tx.code, 0, tx.stderr);
  const { sent, ms } = JSON.parse(tx.stdout) as { sent: number; ms: number };
  await once(rx, 'exit');
  const { received } = JSON.parse(rxOut.split('\n').find((l) => l.startsWith('{'))!) as { received: number };

  // Sent within well under a second, so the burst spans at most two fixed windows of 1000.
  assert.ok(ms < 900, `sending took ${ms} ms; the bound below assumes less than a second`);
  assert.ok(received >= 990 && received <= 2000, `received ${received} of ${sent} (expected 1000 per window, at most two windows)`);

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
    // Everything the receiver got passed the limiter; every datagram was decided one way or the other.
    assert.ok(passed >= received, `limiter passed ${passed}, receiver got ${received}`);
    assert.ok(dropped >= sent - received - 5 && dropped <= sent - received + 5, `limiter dropped ${dropped}, expected about ${sent - received}`);
  } finally {
    stats.close();
  }

  const off = await tb.exec(srv, 'ip', ['link', 'set', 'dev', veth.b.ifname, 'xdp', 'off']);
  assert.equal(off.code, 0);
});
