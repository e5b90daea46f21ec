/**
 * Pins carry an ABI stamp (maps/sl_abi_map: the layout hash of the object's maps and SL_ABI_VERSION),
 * through the real kernel on a veth pair between two namespaces this test creates: up stamps the
 * maps; up again adopts; a tampered or missing stamp is refused (by the command and by the daemon)
 * while the running program stays attached and enforcing; up --reset-state replaces the program
 * through the same link with fresh, stamped maps, never leaving the interface without a program.
 * The tests run in order and share the interface.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ABI_MAP, hex, objectLayout, readStamp, stampOf, writeStamp, type Stamp } from '../../src/agent/abi';
import { AgentCode } from '../../src/agent/errors';
import { pinDir, type Place } from '../../src/agent/state';
import { BpfMap, Link, xdpQuery } from '../../src/ebpf';
import { Abi } from '../../src/generated/types';
import { json, ok, sluice } from '../lib/cli';
import { PROD_OBJECT, REPO, TEST_OBJECT } from '../lib/datapath';
import { assertNoLeftovers, runId, Testbed, type Veth } from '../lib/netns';
import { udpSend } from '../lib/traffic';
import { killDaemon, startDaemon, writeConfig, type DaemonProcess } from '../daemon/helpers';

const tb = new Testbed();
const tmp = mkdtempSync(join(tmpdir(), `sluice-abi-${runId()}-`));
let cli: string;
let veth: Veth;
let place: Place;
let on: string[];
const daemons: DaemonProcess[] = [];

interface Stats { allowed_packets: number; dropped_packets: number }
interface Up { action: string; program_id: number }

/** The stamp up wrote, before the tests tamper with it. */
let goodStamp: Stamp | undefined;

const stampPath = (): string => join(pinDir(place), 'maps', ABI_MAP);

function pinnedStamp(): Stamp | undefined {
  const m = BpfMap.fromPin(stampPath());
  try {
    return readStamp(m);
  } finally {
    m.close();
  }
}

function tamper(s: Stamp): void {
  const m = BpfMap.fromPin(stampPath());
  try {
    writeStamp(m, s);
  } finally {
    m.close();
  }
}

/** The pinned link's id and the id of the program it runs. */
function linkIds(): { link: number; prog: number } {
  const l = Link.fromPin(join(pinDir(place), 'link'));
  try {
    const i = l.info();
    return { link: i.id, prog: i.progId };
  } finally {
    l.close();
  }
}

/** Over the limit (100/s): most of a fast burst of 400 is dropped, and counted (a burst that
 *  spans two windows still gets at most 200 through). */
async function assertEnforcing(what: string): Promise<void> {
  const s0 = await json<Stats>('stats', ...on, '--sample', '0');
  await udpSend(tb, cli, veth.b.ipv4, 400);
  const s1 = await json<Stats>('stats', ...on, '--sample', '0');
  const allowed = s1.allowed_packets - s0.allowed_packets;
  const dropped = s1.dropped_packets - s0.dropped_packets;
  assert.ok(dropped >= 150 && allowed <= 250, `${what}: ${allowed} allowed, ${dropped} dropped of 400 at 100/s`);
}

const REFUSED = /does not carry the ABI stamp of .*so it will not be adopted.*stays attached and keeps enforcing.*sluice up --iface \S+ --netns \S+ --reset-state/s;

before(async () => {
  cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  place = { iface: veth.b.ifname, netns: srv };
  on = ['--iface', veth.b.ifname, '--netns', srv];
  await tb.exec(cli, 'ping', ['-c', '1', '-W', '1', veth.b.ipv4]); // no datagram waits for ARP
});

after(async () => {
  for (const d of daemons) await killDaemon(d);
  await sluice('down', ...on);
  await tb.cleanup();
  rmSync(tmp, { recursive: true, force: true });
  await assertNoLeftovers(runId(), { waitMs: 2000 });
});

test('every code of the control plane is documented in docs/errors.md', () => {
  const doc = readFileSync(join(REPO, 'docs', 'errors.md'), 'utf8');
  for (const code of Object.values(AgentCode)) assert.match(doc, new RegExp(`^\\| \`${code}\` \\|`, 'm'), `${code} has a row`);
});

test('the layout hash is deterministic, cached, and ignores max_entries and data sections', () => {
  const a = objectLayout(PROD_OBJECT);
  assert.equal(objectLayout(PROD_OBJECT), a, 'cached while the file is unchanged');
  assert.notEqual(a.hash, 0n);
  assert.equal(a.abiVersion, Abi.VERSION);
  assert.ok(a.hasStampMap);
  for (const d of a.descriptions.values()) assert.doesNotMatch(d, /max_entries/);
  assert.ok(!Object.keys(a.digests).some((n) => n.includes('.')), 'no .rodata/.bss/.data');
  assert.match(a.descriptions.get('rate_limit_map')!, /struct sl_state\/16\{word@0=/);
  // The test build declares two maps more (its clock and salt); the maps both have are alike.
  const t = objectLayout(TEST_OBJECT);
  assert.notEqual(t.hash, a.hash);
  for (const [n, d] of Object.entries(a.digests)) assert.equal(t.digests[n], d, n);
});

test('up stamps the maps; up again with the same object adopts, stamp unchanged', async () => {
  const up = await json<Up>('up', ...on, '--rate', '100', '--algorithm', 'fixed');
  assert.equal(up.action, 'attached');
  const want = stampOf(objectLayout(PROD_OBJECT));
  assert.deepEqual(pinnedStamp(), want);
  const again = await json<Up>('up', ...on);
  assert.equal(again.action, 'adopted');
  assert.equal(again.program_id, up.program_id);
  assert.deepEqual(pinnedStamp(), want);
  // An object that adds maps (the test build) is adopted, and so is the way back.
  assert.equal((await json<Up>('up', ...on, '--object', TEST_OBJECT)).action, 'upgraded');
  assert.equal((await json<Up>('up', ...on, '--object', PROD_OBJECT)).action, 'upgraded');
  assert.equal((await json<Up>('up', ...on)).action, 'adopted');
  await assertEnforcing('after the round trip');
});

test('a tampered stamp (ABI version, layout hash) is refused; the running program stays attached and enforcing', async () => {
  const ids = linkIds();
  const good = pinnedStamp()!;
  goodStamp = good;
  tamper({ ...good, abiVersion: good.abiVersion + 1 });
  let r = await sluice('up', ...on);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, REFUSED);
  assert.match(r.stderr, new RegExp(`the ABI version differs.*ABI version ${good.abiVersion + 1}.*ABI version ${good.abiVersion}`, 's'));
  tamper({ ...good, layoutHash: good.layoutHash ^ 0xffn });
  r = await sluice('up', ...on, '--rate', '5000');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, REFUSED);
  assert.match(r.stderr, new RegExp(`layout hash differs.*${hex(good.layoutHash ^ 0xffn)}.*${hex(objectLayout(PROD_OBJECT).hash)}`, 's'));
  // Nor does any other command write into that state: set and plug are refused the same way.
  r = await sluice('set', ...on, '--rate', '5000');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /does not carry the ABI stamp this control plane adopted.*nothing is written into it.*stays attached/s);
  r = await sluice('policy', 'plug', ...on, '--slot', '2', '--object', join(REPO, 'bpf', 'plugins', 'drop_ssdp.bpf.o'), '--section', 'xdp');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /nothing is written into it/);
  assert.deepEqual(linkIds(), ids, 'same link, same program');
  assert.equal(xdpQuery(place.iface, { netns: place.netns! }).progId, ids.prog, 'attached');
  assert.deepEqual(pinnedStamp(), { ...good, layoutHash: good.layoutHash ^ 0xffn }, 'nothing rewritten');
  await assertEnforcing('after the refusals (the old limit, not --rate 5000)');
});

test('the daemon reports the refusal with its code and leaves the program running', async () => {
  const ids = linkIds();
  const configFile = join(tmp, 'sluice.yaml');
  writeConfig(configFile, {
    interfaces: [{ iface: place.iface, netns: place.netns, limits: { algorithm: 'fixed', rate: 100 } }],
    api: { socket: join(tmp, 'api.sock') },
    log: { level: 'info' },
    reconcile_interval: '1s',
  });
  const d = startDaemon(configFile);
  daemons.push(d);
  const line = await d.waitLog((l) => l.event === 'adopt_refused', 'adopt_refused');
  assert.equal(line['code'], AgentCode.PinsAbiMismatch);
  assert.equal(line['program_id'], ids.prog);
  assert.match(line.msg, /keeps running and enforcing/);
  assert.match(line.msg, /--reset-state/);
  await d.waitLog((l) => l.event === 'ready', 'ready');
  await new Promise((r) => setTimeout(r, 1200)); // a reconcile: refused again, quietly
  assert.equal(d.logs.filter((l) => l.event === 'adopt_refused').length, 1, 'logged once');
  await killDaemon(d);
  assert.deepEqual(linkIds(), ids, 'same link, same program');
});

test('up --reset-state replaces the program through the same link, never detached, with fresh stamped maps', async () => {
  // A plugged program is carried over into the fresh program array (plugged while the stamp was
  // good: into mismatched pins nothing is plugged).
  const bad = pinnedStamp()!;
  tamper(goodStamp!);
  await ok('policy', 'plug', ...on, '--slot', '3', '--object', join(REPO, 'bpf', 'plugins', 'drop_ssdp.bpf.o'), '--section', 'xdp');
  tamper(bad);
  const ids = linkIds();
  // Watch the interface's XDP program while the command runs.
  let watching = true;
  let polls = 0;
  const seen = new Set<number>();
  const watcher = (async () => {
    while (watching) {
      seen.add(xdpQuery(place.iface, { netns: place.netns! }).progId);
      polls++;
      await new Promise((r) => setImmediate(r));
    }
  })();
  const r = await sluice('up', ...on, '--reset-state', '--json');
  watching = false;
  await watcher;
  assert.equal(r.code, 0, r.stderr);
  const up = JSON.parse(r.stdout) as Up;
  assert.equal(up.action, 'attached');
  const now = linkIds();
  assert.equal(now.link, ids.link, 'the same link');
  assert.notEqual(now.prog, ids.prog, 'a new program');
  assert.equal(up.program_id, now.prog);
  assert.ok(polls > 10, `${polls} polls`);
  assert.ok(!seen.has(0), `never without a program (saw ${[...seen].join(', ')})`);
  assert.deepEqual(pinnedStamp(), stampOf(objectLayout(PROD_OBJECT)));
  const plugins = BpfMap.fromPin(join(pinDir(place), 'maps', 'sl_plugins_xdp'));
  try {
    assert.ok(plugins.lookup(Buffer.from([3, 0, 0, 0])), 'the plugin in slot 3 carried over');
  } finally {
    plugins.close();
  }
  await ok('policy', 'unplug', ...on, '--slot', '3');
  const s = await json<Stats>('stats', ...on, '--sample', '0');
  assert.ok(s.dropped_packets < 5, 'fresh counters');
  await assertEnforcing('after the reset');
  assert.equal((await json<Up>('up', ...on)).action, 'adopted');
});

test('pins without a stamp (made before stamps) are refused the same way; --reset-state recovers', async () => {
  const ids = linkIds();
  rmSync(stampPath());
  const r = await sluice('up', ...on);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, REFUSED);
  assert.match(r.stderr, /the pins have no ABI stamp/);
  assert.deepEqual(linkIds(), ids, 'same link, same program');
  await assertEnforcing('after the refusal');
  const up = await json<Up>('up', ...on, '--reset-state');
  assert.equal(up.action, 'attached');
  assert.equal(linkIds().link, ids.link);
  assert.deepEqual(pinnedStamp(), stampOf(objectLayout(PROD_OBJECT)));
});
