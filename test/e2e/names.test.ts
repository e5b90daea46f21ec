/**
 * Names that are not names never remove protection (issue 11, step 1). Three interfaces are
 * protected, two in one namespace and one in another; then `down` (and `up`, `set`) are given ""
 * (an unset $IFACE), ".", "..", "../x", "a/b" … as interface or namespace. Each must be refused
 * with exit code 2 and a message that says what is wrong, and every protection must still be there
 * and enforcing: pins, links, the XDP program on the interface. `down` of an interface Sluice never
 * protected is exit code 3, not "removed".
 *
 * Pins and settings live under private roots (test/lib/private-root.ts): on a build with the bug,
 * `down --netns NS --iface ..` removes only this file's pins, never the machine's.
 */
import { PIN_ROOT, removePrivateRoots } from '../lib/private-root';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { json, ok, sluice } from '../lib/cli';
import { assertNoLeftovers, Testbed, type Veth } from '../lib/netns';

const tb = new Testbed();
let srv: string;
let srv2: string;
let cli: string;
let v1: Veth;
let v2: Veth;
let v3: Veth;
let places: { iface: string; netns: string }[];

before(async () => {
  cli = await tb.addNs('cli');
  srv = await tb.addNs('srv');
  srv2 = await tb.addNs('srv2');
  v1 = await tb.addVeth(cli, srv);
  v2 = await tb.addVeth(cli, srv);
  v3 = await tb.addVeth(cli, srv2);
  places = [{ iface: v1.b.ifname, netns: srv }, { iface: v2.b.ifname, netns: srv }, { iface: v3.b.ifname, netns: srv2 }];
  for (const p of places) await ok('up', '--iface', p.iface, '--netns', p.netns, '--rate', '100');
});

after(async () => {
  try {
    for (const p of places ?? []) await sluice('down', '--iface', p.iface, '--netns', p.netns);
    await tb.cleanup();
  } finally {
    removePrivateRoots();
  }
  await assertNoLeftovers();
});

/** Every one of the three is still protected: its pins, and its link's program on the interface. */
async function assertAllProtected(what: string): Promise<void> {
  for (const p of places) {
    const dir = join(PIN_ROOT, p.netns, p.iface);
    for (const f of ['link', 'prog', 'maps/rate_limit_map']) assert.ok(existsSync(join(dir, f)), `${what}: ${dir}/${f} is gone`);
    const link = JSON.parse((await tb.exec(p.netns, 'ip', ['-j', 'link', 'show', 'dev', p.iface])).stdout)[0] as { xdp?: { prog?: { id: number } } };
    assert.ok(link.xdp?.prog?.id, `${what}: no XDP program on ${p.iface} in ${p.netns}`);
  }
  const st = await json<{ interfaces: { iface: string; netns: string }[] }>('status');
  assert.deepEqual(st.interfaces.map((i) => `${i.netns}/${i.iface}`).sort(), places.map((p) => `${p.netns}/${p.iface}`).sort(), `${what}: sluice status`);
}

test('down with an interface name that is not one is refused (exit 2) and removes nothing', async () => {
  await assertAllProtected('before');
  const bad = ['', '.', '..', '../x', `../${v3.b.ifname}`, 'a/b', `${v1.b.ifname}/..`, 'x'.repeat(16), 'a:b', 'a b', 'tab\there'];
  for (const iface of bad) {
    const r = await sluice('down', '--netns', srv, '--iface', iface);
    assert.equal(r.code, 2, `down --netns ${srv} --iface ${JSON.stringify(iface)}: exit ${r.code}, ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /--iface: .*(is not an interface name|is empty)/, `message for ${JSON.stringify(iface)}`);
    assert.match(r.stderr, /Nothing was changed/);
    assert.doesNotMatch(r.stdout, /removed/);
  }
  // Without --netns: the host scope.
  for (const iface of ['', '..']) assert.equal((await sluice('down', '--iface', iface)).code, 2, `down --iface ${JSON.stringify(iface)}`);
  await assertAllProtected('after down with bad interface names');
});

test('down with a namespace name that is not one is refused (exit 2) and removes nothing', async () => {
  for (const [netns, iface] of [['..', '..'], ['..', v1.b.ifname], ['', v1.b.ifname], ['.', v1.b.ifname], [`../${srv}`, v1.b.ifname], [`${srv}/..`, v1.b.ifname], ['host', v1.b.ifname], ['x'.repeat(256), v1.b.ifname]] as const) {
    const r = await sluice('down', '--netns', netns, '--iface', iface);
    assert.equal(r.code, 2, `down --netns ${JSON.stringify(netns.slice(0, 20))} --iface ${JSON.stringify(iface)}: exit ${r.code}, ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /--(netns|iface): /);
  }
  await assertAllProtected('after down with bad namespace names');
});

test('down of an interface Sluice does not protect is exit 3, and removes nothing', async () => {
  let r = await sluice('down', '--netns', srv, '--iface', 'nosuch0');
  assert.equal(r.code, 3, r.stdout + r.stderr);
  assert.match(r.stderr, /nosuch0 in network namespace .* is not protected by Sluice, so nothing was removed/);
  r = await sluice('down', '--netns', cli, '--iface', v1.a.ifname, '--json');
  assert.equal(r.code, 3, 'a real interface, never protected');
  assert.doesNotMatch(r.stdout, /"removed": true/);
  await assertAllProtected('after down of unprotected interfaces');
});

test('up and set refuse such names too (exit 2): no pins are made for them', async () => {
  for (const args of [['up', '--iface', '..', '--netns', srv], ['up', '--iface', '', '--netns', srv], ['up', '--iface', v1.b.ifname, '--netns', '..'], ['set', '--iface', '', '--netns', srv, '--rate', '5'], ['deny', 'add', '--iface', '..', '--netns', srv, '192.0.2.1']]) {
    const r = await sluice(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.stderr}`);
  }
  assert.deepEqual(readdirSync(PIN_ROOT).sort(), [srv, srv2].sort(), 'no scope directory other than the two namespaces');
  assert.deepEqual(readdirSync(join(PIN_ROOT, srv)).sort(), [v1.b.ifname, v2.b.ifname].sort());
  await assertAllProtected('after up and set with bad names');
});

test('an interface whose name has a dot (a VLAN\'s eth0.100) is protected and taken down like any other', async () => {
  const v = await tb.addVeth(cli, srv2);
  const name = `${v.b.ifname}.7`;
  for (const args of [[v.b.ifname, 'down'], [v.b.ifname, 'name', name], [name, 'up']]) {
    const r = await tb.exec(srv2, 'ip', ['link', 'set', 'dev', ...args]);
    assert.equal(r.code, 0, r.stderr);
  }
  const up = await json<{ action: string; iface: string }>('up', '--iface', name, '--netns', srv2);
  assert.equal(up.action, 'attached');
  assert.equal(up.iface, name);
  const st = await json<{ interfaces: { iface: string; netns: string }[] }>('status');
  assert.ok(st.interfaces.some((i) => i.iface === name && i.netns === srv2), 'status names it as it is');
  assert.equal((await json<{ action: string }>('up', '--iface', name, '--netns', srv2)).action, 'adopted');
  assert.match(await ok('down', '--iface', name, '--netns', srv2), /protection removed/);
  await assertAllProtected('after the dotted interface came and went');
});

test('down of one interface takes down that one only', async () => {
  assert.match(await ok('down', '--iface', v1.b.ifname, '--netns', srv), /protection removed/);
  assert.ok(!existsSync(join(PIN_ROOT, srv, v1.b.ifname)), 'its pins are gone');
  const rest = places.slice(1);
  for (const p of rest) assert.ok(existsSync(join(PIN_ROOT, p.netns, p.iface, 'link')), `${p.netns}/${p.iface} kept`);
  const st = await json<{ interfaces: { iface: string; netns: string }[] }>('status');
  assert.deepEqual(st.interfaces.map((i) => `${i.netns}/${i.iface}`).sort(), rest.map((p) => `${p.netns}/${p.iface}`).sort());
  places = rest;
});
