/**
 * Nothing unprotects a machine by accident, in the daemon (issue 11, steps 5 and 6), over a daemon
 * running in this process on two veths in a namespace this test creates, with pins and settings
 * under private roots (test/lib/private-root.ts):
 *  - a reload of a file cut short (`interfaces:` with nothing under it) or without `interfaces` is
 *    refused: both interfaces stay protected, and sluice_up stays 1 because they really are;
 *  - a link detached by hand is not "adopted" as if it still protected: the daemon logs that it
 *    vanished once, attaches afresh, and the interface runs the program again;
 *  - `interfaces: []` takes everything down, and the log says so first.
 */
import { PIN_ROOT, removePrivateRoots, STATE_DIR } from '../lib/private-root';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import pino from 'pino';
import type { Daemon } from '../../src/agent/daemon';
import { startDaemon } from '../../src/cli/daemon';
import { Protection } from '../../src/agent/protection';
import type { Place } from '../../src/agent/state';
import { ConfigError } from '../../src/config';
import { Link } from '../../src/ebpf';
import { assertNoLeftovers, run, Testbed } from '../lib/netns';
import { sleep, writeConfig } from './helpers';

const tb = new Testbed();
const configFile = join(STATE_DIR, 'sluice.yaml');
const logs: (Record<string, unknown> & { event?: string; msg: string; level: number })[] = [];
let places: Place[];
let daemon: Daemon;

function config(ps: Place[]): Record<string, unknown> {
  return {
    interfaces: ps.map((p) => ({ iface: p.iface, netns: p.netns, max_entries: 1024, limits: { rate: 100 } })),
    api: { socket: null },
    reconcile_interval: '1s',
  };
}

/** The XDP program id running on a place's interface, or undefined. */
async function xdpProg(p: Place): Promise<number | undefined> {
  const link = JSON.parse((await tb.exec(p.netns!, 'ip', ['-j', 'link', 'show', 'dev', p.iface])).stdout)[0] as { xdp?: { prog?: { id: number } } };
  return link.xdp?.prog?.id;
}

/** sluice_up of a place, as the daemon's /metrics says it. */
async function up(p: Place): Promise<number | undefined> {
  const body = (await daemon.metrics()).body;
  const m = new RegExp(`^sluice_up\\{[^}]*iface="${p.iface}"[^}]*\\} (\\d+)$`, 'm').exec(body);
  return m ? Number(m[1]) : undefined;
}

async function assertProtected(p: Place, what: string): Promise<void> {
  assert.ok(existsSync(join(PIN_ROOT, p.netns!, p.iface, 'link')), `${what}: the link pin of ${p.iface} is gone`);
  const prog = await xdpProg(p);
  assert.ok(prog, `${what}: no XDP program on ${p.iface}`);
  const l = Link.fromPin(join(PIN_ROOT, p.netns!, p.iface, 'link'));
  try {
    assert.equal(l.info().progId, prog, `${what}: ${p.iface} runs the pinned link's program`);
  } finally {
    l.close();
  }
  assert.equal(await up(p), 1, `${what}: sluice_up of ${p.iface}`);
}

before(async () => {
  const cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  const a = await tb.addVeth(cli, srv);
  const b = await tb.addVeth(cli, srv);
  places = [{ iface: a.b.ifname, netns: srv }, { iface: b.b.ifname, netns: srv }];
  writeConfig(configFile, config(places));
  const logger = pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line) as (typeof logs)[number]); } });
  daemon = await startDaemon({ configFile, listen: false, watch: false, logger });
});

after(async () => {
  try {
    await daemon?.stop({ detach: false });
    for (const p of places ?? []) await Protection.down(p).catch(() => undefined);
    await tb.cleanup();
  } finally {
    removePrivateRoots();
  }
  await assertNoLeftovers();
});

test('a reload of a file cut short (`interfaces:` and nothing under it) or without interfaces is refused; everything stays protected', async () => {
  for (const p of places) await assertProtected(p, 'at start');
  for (const text of ['interfaces:\napi: { socket: null }\nreconcile_interval: 1s\n', 'api: { socket: null }\nreconcile_interval: 1s\n']) {
    writeConfig(configFile, text);
    const n = logs.length;
    await assert.rejects(daemon.reload('test'), (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.path === 'interfaces' && /interfaces: \[\]/.test(p.message)));
    assert.ok(logs.slice(n).some((l) => l.event === 'reload_refused'), 'logged as refused');
    assert.ok(!logs.slice(n).some((l) => l.event === 'removing_all'), 'nothing taken down');
    for (const p of places) await assertProtected(p, `after the refused reload of ${JSON.stringify(text.split('\n')[0])}`);
  }
  writeConfig(configFile, config(places));
  await daemon.reload('test');
});

test('a link detached by hand is repaired, not adopted: "vanished" once, attached again, sluice_up 1 because it runs', async () => {
  const p = places[0]!;
  const l = Link.fromPin(join(PIN_ROOT, p.netns!, p.iface, 'link'));
  const id = l.info().id;
  l.close();
  const n = logs.length;
  const r = await run('bpftool', ['link', 'detach', 'id', String(id)]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await xdpProg(p), undefined, 'detached: the interface runs nothing');
  const deadline = Date.now() + 8000;
  while (Date.now() < deadline && !logs.slice(n).some((x) => x.event === 'attached' && x['iface'] === p.iface)) await sleep(100);
  const mine = logs.slice(n).filter((x) => x['iface'] === p.iface);
  assert.ok(mine.some((x) => x.event === 'attached'), `attached again; logged: ${mine.map((x) => `${x.event}: ${x.msg}`).join('\n')}`);
  assert.ok(mine.some((x) => x.event === 'up_warning' && /does not protect it \(link \d+ is detached/.test(x.msg)), 'says why it attached afresh');
  assert.ok(!mine.some((x) => x.event === 'adopted'), 'a defunct link is never "adopted"');
  await assertProtected(p, 'after the repair');
  // And it stays repaired: no more "vanished" over the next reconciles.
  const m = logs.length;
  await sleep(2600);
  const later = logs.slice(m).filter((x) => x['iface'] === p.iface && (x.event === 'vanished' || x.event === 'adopted' || x.event === 'attached'));
  assert.deepEqual(later.map((x) => x.event), [], 'no vanished/re-adopt loop');
  assert.equal(mine.filter((x) => x.event === 'vanished').length, 1, 'vanished logged once');
  await assertProtected(places[1]!, 'the other interface');
});

test('`interfaces: []` takes every interface down, and the log says so first', async () => {
  writeConfig(configFile, { interfaces: [], api: { socket: null }, reconcile_interval: '1s' });
  const n = logs.length;
  await daemon.reload('test');
  const warn = logs.slice(n).find((l) => l.event === 'removing_all');
  assert.ok(warn, `no removing_all line; logged: ${logs.slice(n).map((l) => l.msg).join('\n')}`);
  assert.equal(warn.level, 40, 'at level warn');
  assert.deepEqual((warn['interfaces'] as string[]).length, 2);
  assert.match(warn.msg, /takes down every interface the daemon protects .*asks for none \(interfaces: \[\]\)/);
  for (const p of places) {
    assert.ok(!existsSync(join(PIN_ROOT, p.netns!, p.iface)), `${p.iface} taken down`);
    assert.equal(await xdpProg(p), undefined);
  }
});
