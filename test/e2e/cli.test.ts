/**
 * The `sluice` command end to end, on veth pairs between namespaces this test creates: up, traffic,
 * set while traffic flows, up again (adopt, keep state), upgrade through the link, down twice, the
 * lists, the errors people will hit. Each command runs as a real process.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Program } from '../../src/ebpf';
import { REPO, TEST_OBJECT } from '../lib/datapath';
import { json, ok, sluice } from '../lib/cli';
import { assertNoLeftovers, Testbed, type Veth } from '../lib/netns';
import { udpReceiver, udpSend } from '../lib/traffic';



const tb = new Testbed();
let cli: string;
let srv: string;
let veth: Veth;
let on: string[];

before(async () => {
  cli = await tb.addNs('cli');
  srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  on = ['--iface', veth.b.ifname, '--netns', srv];
});

after(async () => {
  await sluice('down', ...on);
  await tb.cleanup();
  await assertNoLeftovers();
});

interface Stats { allowed_packets: number; dropped_packets: number; allowed_bytes: number; dropped_bytes: number }

test('up protects; traffic over the limit is dropped and counted', async () => {
  const up = await json<{ action: string; mode: string; program_id: number }>('up', ...on, '--rate', '200', '--algorithm', 'fixed');
  assert.equal(up.action, 'attached');
  assert.equal(up.mode, 'native');
  const rx = await udpReceiver(tb, srv, 9000, 5000);
  const { sent, ms } = await udpSend(tb, cli, veth.b.ipv4, 2000);
  const { received } = await rx.result();
  assert.ok(ms < 900, `sent in ${ms} ms`);
  assert.ok(received >= 190 && received <= 400, `received ${received} of ${sent} at 200/s`);
  const s = await json<Stats>('stats', ...on, '--sample', '0');
  for (const k of ['allowed_packets', 'dropped_packets', 'allowed_bytes', 'dropped_bytes'] as const) assert.equal(typeof s[k], 'number', k);
  assert.ok(s.dropped_packets >= sent - received - 5, `dropped ${s.dropped_packets}`);
});

test('set while traffic flows: the new limit holds within one window', async () => {
  await ok('set', ...on, '--rate', '1000');
  const rx = await udpReceiver(tb, srv, 9000, 10_000);
  // 1,500 packets/s for 4 s; the limit drops from 1000/s to 100/s after 2 s.
  const sending = udpSend(tb, cli, veth.b.ipv4, 6000, 1500);
  await new Promise((r) => setTimeout(r, 2000));
  const before = await json<Stats>('stats', ...on, '--sample', '0');
  await ok('set', ...on, '--rate', '100');
  await new Promise((r) => setTimeout(r, 1100)); // one window later
  const mid = await json<Stats>('stats', ...on, '--sample', '0');
  await sending;
  const end = await json<Stats>('stats', ...on, '--sample', '0');
  await rx.result();
  const passedAfter = end.allowed_packets - mid.allowed_packets;
  const secondsAfter = 4 - 3.1;
  assert.ok(mid.allowed_packets - before.allowed_packets <= 1000 + 100 + 10, 'the change did not let more through');
  assert.ok(passedAfter <= 100 * Math.ceil(secondsAfter + 1) + 10, `after the change ${passedAfter} passed in about ${secondsAfter.toFixed(1)} s at 100/s`);
});

test('up again adopts: state and counters are kept, nothing reloaded', async () => {
  const s0 = await json<Stats>('stats', ...on, '--sample', '0');
  const dump0 = await json<{ entries: { key: string; dropped: number }[] }>('dump', ...on);
  const r = await json<{ action: string; program_id: number }>('up', ...on);
  assert.equal(r.action, 'adopted');
  const s1 = await json<Stats>('stats', ...on, '--sample', '0');
  assert.ok(s1.allowed_packets >= s0.allowed_packets && s1.dropped_packets >= s0.dropped_packets, 'counters not reset');
  const dump1 = await json<{ entries: { key: string; dropped: number }[] }>('dump', ...on);
  const key = `${veth.a.ipv4}/32`;
  assert.equal(dump1.entries.find((e) => e.key === key)?.dropped, dump0.entries.find((e) => e.key === key)?.dropped, 'per-client state kept');
});

test('up with a changed object replaces the program through the link, keeping counters', async () => {
  const before = await json<{ program_id: number }>('up', ...on);
  const s0 = await json<Stats>('stats', ...on, '--sample', '0');
  const r = await json<{ action: string; program_id: number }>('up', ...on, '--object', TEST_OBJECT);
  assert.equal(r.action, 'upgraded');
  assert.notEqual(r.program_id, before.program_id);
  const s1 = await json<Stats>('stats', ...on, '--sample', '0');
  assert.ok(s1.dropped_packets >= s0.dropped_packets, 'counters kept across the upgrade');
  // Still enforcing (the test build reads the kernel clock when its clock map is zero).
  const rx = await udpReceiver(tb, srv, 9000, 4000);
  await udpSend(tb, cli, veth.b.ipv4, 1000);
  const { received } = await rx.result();
  assert.ok(received <= 200 + 10, `received ${received} at 100/s after the upgrade`);
  const back = await json<{ action: string }>('up', ...on, '--object', join(REPO, 'bpf', 'sluice.bpf.o'));
  assert.equal(back.action, 'upgraded');
});

test('allow and deny lists change at runtime', async () => {
  await ok('deny', 'add', ...on, `${veth.a.ipv4}/32`);
  let rx = await udpReceiver(tb, srv, 9000, 3000);
  await udpSend(tb, cli, veth.b.ipv4, 50);
  assert.equal((await rx.result()).received, 0, 'denied');
  await ok('deny', 'del', ...on, `${veth.a.ipv4}/32`);
  await ok('allow', 'add', ...on, '10.0.0.0/8');
  await new Promise((r) => setTimeout(r, 1100)); // a fresh window
  const before = await json<{ global: { reasons: Record<string, { packets: number }> }; dropped_packets: number }>('stats', ...on, '--sample', '0');
  rx = await udpReceiver(tb, srv, 9000, 3000);
  await udpSend(tb, cli, veth.b.ipv4, 500, 2000); // paced: the receiver's socket keeps up
  assert.equal((await rx.result()).received, 500, 'allowlisted: no limit applies');
  const after_ = await json<{ global: { reasons: Record<string, { packets: number }> }; dropped_packets: number }>('stats', ...on, '--sample', '0');
  assert.ok(after_.global.reasons['allowlist']!.packets - (before.global.reasons['allowlist']?.packets ?? 0) >= 500, 'counted as allowlisted');
  assert.equal(after_.dropped_packets, before.dropped_packets, 'nothing dropped');
  const l = await json<{ allow: string[] }>('allow', 'list', ...on);
  assert.deepEqual(l.allow, ['10.0.0.0/8']);
  await ok('allow', 'del', ...on, '10.0.0.0/8');
});

test('top, events and status describe what happens', async () => {
  await new Promise((r) => setTimeout(r, 1100));
  const events = sluice('events', ...on, '--json', '--count', '3');
  // events shows only what is decided after it starts: flood until it has its three.
  let done = false;
  void events.then(() => { done = true; });
  for (let i = 0; i < 30 && !done; i++) {
    await udpSend(tb, cli, veth.b.ipv4, 500);
    await new Promise((r) => setTimeout(r, 500));
  }
  const ev = await events;
  assert.equal(ev.code, 0, ev.stderr);
  // Events, then one line of what the kernel's budget left out.
  const lines = ev.stdout.trim().split('\n').map((l) => JSON.parse(l) as { source: string; reason: string; verdict: string }).filter((l) => 'source' in l);
  assert.equal(lines.length, 3);
  assert.deepEqual([lines[0]!.source, lines[0]!.reason, lines[0]!.verdict], [veth.a.ipv4, 'limit', 'drop']);
  // One reading (--interval 0): no packets/s, and it says why.
  const top = await json<{ rate: unknown; top: { key: string; dropped: number; rate_unknown: string }[] }>('top', ...on, '-n', '5', '--interval', '0');
  assert.equal(top.top[0]!.key, `${veth.a.ipv4}/32`);
  assert.ok(top.top[0]!.dropped > 0);
  assert.deepEqual([top.rate, top.top[0]!.rate_unknown], [null, 'first_reading']);
  assert.match(await ok('top', ...on, '-n', '5', '--interval', '0'), /^pps: not measured \(--interval 0\)$/m);
  for (const args of [['--watch', '1s', '--interval', '2s'], ['--interval', '50ms']]) {
    const r = await sluice('top', ...on, ...args);
    assert.equal(r.code, 2, `top ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /SLUICE_E_INVALID_ARGUMENT|--interval/);
  }
  const st = await json<{ interfaces: { iface: string; netns: string; mode: string; state_entries: number; program_id: number }[] }>('status');
  const mine = st.interfaces.find((i) => i.iface === veth.b.ifname && i.netns === srv)!;
  assert.ok(mine, 'listed');
  assert.equal(mine.mode, 'native');
  assert.ok(mine.state_entries >= 1);
  Program.fromId(mine.program_id).close(); // the id is real
});

test('errors people hit: clear message, documented code, exit status', async () => {
  let r = await sluice('up', '--iface', 'nosuch0', '--netns', srv);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no interface named "nosuch0"/);
  r = await sluice('set', ...on, '--rate', '0');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /rate "0" must be at least 1/);
  r = await sluice('set', ...on, '--rate', 'fast');
  assert.equal(r.code, 2);
  r = await sluice('set', ...on, '--rate', '99999999999999999');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /too large/);
  r = await sluice('up', ...on, '--max-entries', '5000');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--reset-state/);
  r = await sluice('stats', '--iface', veth.a.ifname, '--netns', cli);
  assert.equal(r.code, 3, 'not protected');
  // Another tool's XDP program: named, not replaced.
  const other = await tb.exec(cli, 'ip', ['link', 'set', 'dev', veth.a.ifname, 'xdp', 'obj', join(REPO, 'bpf', 'sluice.bpf.o'), 'sec', 'xdp']);
  assert.equal(other.code, 0, other.stderr);
  r = await sluice('up', '--iface', veth.a.ifname, '--netns', cli);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /already has an XDP program \(id \d+, name sluice_xdp/);
  await tb.exec(cli, 'ip', ['link', 'set', 'dev', veth.a.ifname, 'xdp', 'off']);
});

test('--reset-state starts afresh; the same interface name in two namespaces never collides', async () => {
  const r = await json<{ action: string }>('up', ...on, '--max-entries', '5000', '--reset-state');
  assert.equal(r.action, 'attached');
  const s = await json<Stats>('stats', ...on, '--sample', '0');
  assert.ok(s.dropped_packets < 5, 'fresh counters');
  // A second pair whose server end has the same name as ours, in another namespace.
  const cli2 = await tb.addNs('cli2');
  const srv2 = await tb.addNs('srv2');
  const v2 = await tb.addVeth(cli2, srv2);
  await tb.exec(srv2, 'ip', ['link', 'set', 'dev', v2.b.ifname, 'name', veth.b.ifname]);
  const on2 = ['--iface', veth.b.ifname, '--netns', srv2];
  try {
    await ok('up', ...on2, '--rate', '7');
    const st = await json<{ interfaces: { iface: string; netns: string; limits: { rate: number } }[] }>('status');
    const both = st.interfaces.filter((i) => i.iface === veth.b.ifname);
    assert.deepEqual(both.map((i) => [i.netns, i.limits.rate]).sort(), [[srv, 100], [srv2, 7]].sort());
  } finally {
    await ok('down', ...on2);
  }
});

test('down removes protection and leaves the interface as it found it; down again says nothing was there (exit 3)', async () => {
  assert.match(await ok('down', ...on), /protection removed/);
  const again = await sluice('down', ...on);
  assert.equal(again.code, 3, again.stderr);
  assert.match(again.stderr, /is not protected by Sluice, so nothing was removed/);
  const link = JSON.parse((await tb.exec(srv, 'ip', ['-j', 'link', 'show', 'dev', veth.b.ifname])).stdout)[0];
  assert.equal(link.xdp, undefined, 'no XDP program left');
});
