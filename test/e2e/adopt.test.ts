/**
 * Adoption of what is really there (issue 11, step 6), through the `sluice` command on veths in
 * namespaces this test creates, with pins under private roots (test/lib/private-root.ts):
 *  - a namespace deleted and created again, its interface getting the same ifindex: the pins'
 *    link holds nothing, so `up` must not report "adopted" while the interface runs no program;
 *  - the program pin missing, as a crash between "remove the old pin" and "pin the new one" left
 *    it: `up` must still work (it failed for ever after), and the pins are whole again.
 */
import { PIN_ROOT, removePrivateRoots } from '../lib/private-root';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { TEST_OBJECT } from '../lib/datapath';
import { json, sluice } from '../lib/cli';
import { assertNoLeftovers, run, Testbed, type Veth } from '../lib/netns';
import { addNetns, configureEnd, createVeth, initNetns, waitLinkReady } from '../../src/lab/netns';

const tb = new Testbed();
let cli: string;
let srv: string;
let veth: Veth;
let on: string[];

interface Up { action: string; ifindex: number; program_id: number; warnings: string[] }

before(async () => {
  cli = await tb.addNs('cli');
  srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  on = ['--iface', veth.b.ifname, '--netns', srv];
});

after(async () => {
  try {
    await sluice('down', ...on);
    await tb.cleanup();
  } finally {
    removePrivateRoots();
  }
  await assertNoLeftovers();
});

async function xdpProg(): Promise<number | undefined> {
  const link = JSON.parse((await tb.exec(srv, 'ip', ['-j', 'link', 'show', 'dev', veth.b.ifname])).stdout)[0] as { xdp?: { prog?: { id: number } } };
  return link.xdp?.prog?.id;
}

test('a namespace re-created with the same ifindex: up attaches afresh instead of "adopting" a link that holds nothing', async () => {
  const first = await json<Up>('up', ...on, '--rate', '100');
  assert.equal(first.action, 'attached');
  assert.equal(await xdpProg(), first.program_id);
  // The namespace goes (and the veth pair with it) and comes back with the same names.
  assert.equal((await run('ip', ['netns', 'del', srv])).code, 0);
  await addNetns(srv);
  await initNetns(srv);
  // The pair goes with the namespace, but the kernel tears it down after `ip netns del` returns:
  // until then the client's end still holds its name.
  for (let i = 0; i < 100 && (await run('ip', ['-n', cli, 'link', 'show', 'dev', veth.a.ifname])).code === 0; i++) await new Promise((r) => setTimeout(r, 50));
  await createVeth({ ns: cli, ifname: veth.a.ifname, mac: veth.a.mac }, { ns: srv, ifname: veth.b.ifname, mac: veth.b.mac });
  for (const e of [veth.a, veth.b]) await configureEnd(e.ns, e.ifname, { ipv4: e.ipv4, prefix4: e.prefix4, ipv6: e.ipv6, prefix6: e.prefix6 });
  for (const e of [veth.a, veth.b]) await waitLinkReady(e.ns, e.ifname);
  assert.equal(await xdpProg(), undefined, 'the new interface runs nothing');

  const again = await json<Up>('up', ...on);
  assert.equal(again.ifindex, first.ifindex, 'the case under test: the same ifindex as before');
  assert.equal(again.action, 'attached', `action ${again.action}; warnings: ${again.warnings.join('; ')}`);
  assert.ok(again.warnings.some((w) => /does not protect it \(link \d+ is detached from every interface/.test(w)), again.warnings.join('; '));
  assert.equal(await xdpProg(), again.program_id, 'the interface runs the program up reported');
  const st = await json<{ interfaces: { iface: string; netns: string; limits: { rate: number } }[] }>('status');
  assert.equal(st.interfaces.find((i) => i.iface === veth.b.ifname && i.netns === srv)?.limits.rate, 100, 'limits kept');
  // And now it is really adopted.
  assert.equal((await json<Up>('up', ...on)).action, 'adopted');
});

test('a missing program pin (a crash between removing the old pin and pinning the new) does not make up fail', async () => {
  const dir = join(PIN_ROOT, srv, veth.b.ifname);
  rmSync(join(dir, 'prog'));
  const r = await json<Up>('up', ...on);
  assert.equal(r.action, 'upgraded');
  assert.ok(r.warnings.some((w) => /program pin .* was missing/.test(w)), r.warnings.join('; '));
  assert.ok(existsSync(join(dir, 'prog')), 'pinned again');
  assert.equal(await xdpProg(), r.program_id);
  assert.equal((await json<Up>('up', ...on)).action, 'adopted', 'whole again');
  // An upgrade replaces the pin by a rename: nothing staged is left beside it.
  const up = await json<Up>('up', ...on, '--object', TEST_OBJECT);
  assert.equal(up.action, 'upgraded');
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('_new')), []);
  assert.equal(await xdpProg(), up.program_id);
});
