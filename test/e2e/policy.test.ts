/**
 * Policy files end to end, in namespaces this test creates: up with a policy, an egress limit on
 * traffic leaving a namespace, apply with a deadline that rolls back, a refused policy that leaves
 * the live one in force, and a plugged program deciding its rule's packets.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { REPO } from '../lib/datapath';
import { ok, sluice } from '../lib/cli';
import { assertNoLeftovers, Testbed, type Veth } from '../lib/netns';
import { udpReceiver, udpSend } from '../lib/traffic';


const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), 'sluice-policy-'));
let cli: string;
let srv: string;
let veth: Veth;
let on: string[];
const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

before(async () => {
  cli = await tb.addNs('cli');
  srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  on = ['--iface', veth.b.ifname, '--netns', srv];
});
after(async () => {
  await sluice('down', ...on);
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers();
});

interface Show { version: number; rules: { name: string; allowed: number; dropped: number }[]; file: string }
const show = async (): Promise<Show> => JSON.parse(await ok('policy', 'show', ...on, '--json')) as Show;

test('up --policy: ingress rules by port, and an egress limit on traffic leaving the namespace', async () => {
  const p = file('p1.yaml', `
defaults: { algorithm: fixed, rate: 100000 }
rules:
  - name: udp-9000
    match: { proto: udp, dst_port: 9000 }
    limit: { rate: 200/s }
  - name: out
    match: { dir: egress, proto: udp, dst_port: 9001 }
    limit: { rate: 100/s }
`);
  await ok('up', ...on, '--policy', p);
  // Ingress: 2,000 datagrams to port 9000 in well under a second.
  let rx = await udpReceiver(tb, srv, 9000, 5000);
  await udpSend(tb, cli, veth.b.ipv4, 2000, 0, 9000);
  let got = (await rx.result()).received;
  assert.ok(got >= 195 && got <= 400, `ingress: ${got} of 2000 at 200/s`);
  // Egress: the server sends to the client; the limit is at the server's egress, keyed by destination.
  await sleep(1100);
  rx = await udpReceiver(tb, cli, 9001, 5000);
  await udpSend(tb, srv, veth.a.ipv4, 2000, 0, 9001);
  got = (await rx.result()).received;
  assert.ok(got >= 95 && got <= 200, `egress: ${got} of 2000 left at 100/s`);
  const s = await show();
  assert.ok(s.rules.find((r) => r.name === 'out')!.dropped >= 1700, 'the egress rule counted its drops');
  const tc = await tb.exec(srv, 'tc', ['filter', 'show', 'dev', veth.b.ifname, 'egress']);
  assert.match(tc.stdout, /sluice_egress/, 'Sluice\'s filter is on egress');
});

test('apply --confirm-within: not confirmed, the previous policy comes back by itself', async () => {
  const before = await show();
  const strict = file('p2.yaml', `
defaults: { algorithm: fixed, rate: 100000 }
rules:
  - name: udp-9000
    match: { proto: udp, dst_port: 9000 }
    limit: { rate: 5/s }
`);
  await ok('policy', 'apply', strict, ...on, '--confirm-within', '2s');
  assert.equal((await show()).file, strict);
  await sleep(3500);
  const after_ = await show();
  assert.equal(after_.file, before.file, 'rolled back to the previous file');
  assert.ok(after_.version > before.version + 1, 'by a new flip, not by magic');
  await sleep(1100);
  const rx = await udpReceiver(tb, srv, 9000, 5000);
  await udpSend(tb, cli, veth.b.ipv4, 1000, 0, 9000);
  const got = (await rx.result()).received;
  assert.ok(got >= 195, `the old limit (200/s) is back: ${got}`);
});

test('apply --confirm-within, confirmed: the new policy stays', async () => {
  const p = file('p3.yaml', `
defaults: { algorithm: fixed, rate: 100000 }
rules:
  - name: udp-9000
    match: { proto: udp, dst_port: 9000 }
    limit: { rate: 300/s }
`);
  // A deadline a loaded machine cannot miss between two commands (each starts node and opens the
  // pins: seconds at a load average of 10), then past it.
  const t0 = Date.now();
  await ok('policy', 'apply', p, ...on, '--confirm-within', '8s');
  assert.match(await ok('policy', 'confirm', ...on), /confirmed/);
  await sleep(t0 + 9000 - Date.now());
  assert.equal((await show()).file, p);
});

test('an invalid policy is refused with every problem listed; the live one stays', async () => {
  const before = await show();
  const bad = file('bad.yaml', `
defaults: { algorithm: leaky }
rules:
  - name: x
    match: { proto: udp, dst_port: 99999 }
    limit: { rate: 0 }
`);
  const r = await sluice('policy', 'apply', bad, ...on);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /3 problems/);
  assert.match(r.stderr, /bad\.yaml:2: defaults\.algorithm/);
  assert.match(r.stderr, /bad\.yaml:5: rules\[0\]\.match\.dst_port/);
  assert.match(r.stderr, /bad\.yaml:6: rules\[0\]\.limit\.rate/);
  const after_ = await show();
  assert.equal(after_.version, before.version, 'nothing flipped');
  const c = await sluice('policy', 'check', bad);
  assert.equal(c.code, 2);
});

test('a plugged program decides its rule\'s packets; unplug restores the built-in limiter', async () => {
  const p = file('p4.yaml', `
defaults: { algorithm: fixed, rate: 100000 }
rules:
  - name: ssdp
    match: { proto: udp, dst_port: 1900 }
    limit: { rate: 1000000 }
    plugin: 3
`);
  await ok('policy', 'apply', p, ...on);
  await ok('policy', 'plug', ...on, '--slot', '3', '--object', join(REPO, 'bpf', 'plugins', 'drop_ssdp.bpf.o'), '--section', 'xdp');
  let rx = await udpReceiver(tb, srv, 1900, 4000);
  await udpSend(tb, cli, veth.b.ipv4, 100, 0, 1900);
  assert.equal((await rx.result()).received, 0, 'the plugin drops SSDP');
  await ok('policy', 'unplug', ...on, '--slot', '3');
  rx = await udpReceiver(tb, srv, 1900, 4000);
  await udpSend(tb, cli, veth.b.ipv4, 100, 0, 1900);
  assert.equal((await rx.result()).received, 100, 'the built-in limit (1M/s) passes them');
});
