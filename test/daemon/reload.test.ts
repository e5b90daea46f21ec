/**
 * Issue 12, step 4: reloads that never surprise. A daemon in this process protects a veth in a
 * namespace this test creates, with its config, policy file and GeoIP CSV in a directory laid out
 * as Kubernetes mounts a ConfigMap (files are links through `..data`, updated by swapping that
 * link). A changed policy file or CSV takes effect through the watch alone (the reconcile interval
 * is an hour); GeoIP tiers, country codes and CSV lines are checked before anything reaches the
 * kernel; an apply that fails is reported as a failure.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import parsePrometheus from 'parse-prometheus-text-format';
import pino from 'pino';
import { stringify } from 'yaml';
import type { Daemon } from '../../src/agent/daemon';
import { startDaemon } from '../../src/cli/daemon';
import { Protection } from '../../src/agent/protection';
import { loadSettings, type Place } from '../../src/agent/state';
import { assertNoLeftovers, runId, Testbed, type Veth } from '../lib/netns';
import { udpSend } from '../lib/traffic';
import { delta, nextWindow, sleep, totals, type LogLine } from './helpers';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), `sluice-reload-${runId()}-`));
const cm = join(dir, 'config'); // the ConfigMap's mount
const logs: LogLine[] = [];
let veth: Veth;
let place: Place;
let cli: string;
let daemon: Daemon;
let app: FastifyInstance;
let generation = 0;
let current: string | undefined;
let files: Record<string, string> = {};

/** Publish files as the kubelet does: a new directory, `..data` swapped to it by rename, the old one removed. */
function publish(update: Record<string, string>): void {
  files = { ...files, ...update };
  const gen = join(cm, `..2026_12_01_11_00_00.${++generation}`);
  mkdirSync(gen);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(gen, name), text);
  symlinkSync(basename(gen), join(cm, '..data_tmp'));
  renameSync(join(cm, '..data_tmp'), join(cm, '..data'));
  for (const name of Object.keys(files)) if (!existsSync(join(cm, name))) symlinkSync(join('..data', name), join(cm, name));
  if (current) rmSync(current, { recursive: true, force: true });
  current = gen;
}

function config(extra: Record<string, unknown>[] = [], own: Record<string, unknown> = {}): string {
  return stringify({
    interfaces: [{ iface: place.iface, netns: place.netns, max_entries: 2048, max_list_entries: 16, policy: 'policy.yaml', ...own }, ...extra],
    api: { socket: null },
    reconcile_interval: '1h', // only the watch can see a change in time
  });
}

function policy(nearRate: number, tiers: Record<string, string[]> = { near: ['DE'] }): string {
  return stringify({
    defaults: { algorithm: 'fixed', rate: 1000 },
    geoip: { tiers, default_tier: 'far', csv: 'geo.csv' },
    rules: [{ name: 'near', match: { tier: 'near' }, limit: { rate: nearRate } }],
  });
}

const csv = (cc: string): string => `# first,last,CC\n${veth.a.ipv4},${veth.a.ipv4},${cc}\n198.51.100.0,198.51.100.255,DE\n`;

const reloads = (): number => logs.filter((l) => l.event === 'reloaded' || l.event === 'reload_refused' || l.event === 'reload_failed').length;

async function waitReload(n: number, what: string): Promise<LogLine> {
  const deadline = Date.now() + 8000;
  while (reloads() <= n) {
    if (Date.now() > deadline) assert.fail(`no reload within 8 s after ${what}; log:\n${logs.map((l) => l.msg).join('\n')}`);
    await sleep(50);
  }
  return logs.filter((l) => l.event === 'reloaded' || l.event === 'reload_refused' || l.event === 'reload_failed').at(-1)!;
}

async function flood(n: number): Promise<{ allowed: number; dropped: number }> {
  await nextWindow();
  const a = totals(place);
  await udpSend(tb, cli, veth.b.ipv4, n);
  return delta(a, totals(place));
}

const reload = async (): Promise<{ statusCode: number; body: string; json: () => any }> => app.inject({ method: 'POST', url: '/v1/reload', payload: {} }); // eslint-disable-line @typescript-eslint/no-explicit-any
const nearRate = (): number => Number(loadSettings(place)?.rules.find((r) => r.name === 'near')?.pps);

before(async () => {
  cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  place = { iface: veth.b.ifname, netns: srv };
  mkdirSync(cm);
  publish({ 'sluice.yaml': config(), 'policy.yaml': policy(50), 'geo.csv': csv('DE') });
  await tb.exec(cli, 'ping', ['-c', '1', '-W', '1', veth.b.ipv4]);
  const logger = pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line) as LogLine); } });
  daemon = await startDaemon({ configFile: join(cm, 'sluice.yaml'), listen: false, logger });
  app = daemon.api();
});

after(async () => {
  await app?.close();
  await daemon?.stop({ detach: true });
  try { await Protection.down(place); } catch { /* already down */ }
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers(runId(), { waitMs: 2000 });
});

test('a policy file updated through the ConfigMap\'s ..data swap takes effect (the config file did not change)', async () => {
  assert.equal(nearRate(), 50);
  const n = reloads();
  publish({ 'policy.yaml': policy(200) });
  const l = await waitReload(n, 'the policy swap');
  assert.equal(l.event, 'reloaded', l.msg);
  assert.equal(l['source'], 'file');
  assert.equal(nearRate(), 200, 'the new policy is live');
});

test('a file refused for naming a policy file that is not there yet is tried again when that file appears', async () => {
  let n = reloads();
  publish({ 'sluice.yaml': config([], { policy: 'policy2.yaml' }) });
  const refused = await waitReload(n, 'the config naming policy2.yaml');
  assert.equal(refused.event, 'reload_refused', refused.msg);
  n = reloads();
  publish({ 'policy2.yaml': policy(200) }); // the config file is unchanged
  const l = await waitReload(n, 'policy2.yaml appearing');
  assert.equal(l.event, 'reloaded', l.msg);
  n = reloads();
  publish({ 'sluice.yaml': config() });
  assert.equal((await waitReload(n, 'the config back to policy.yaml')).event, 'reloaded');
  assert.equal(nearRate(), 200);
});

test('a changed GeoIP CSV is re-read: a source that leaves the tier leaves its limit', async () => {
  const inTier = await flood(600);
  assert.ok(inTier.allowed >= 40 && inTier.allowed <= 400, `in tier near (200/s, or 50/s had the policy not changed): allowed ${inTier.allowed} of 600`);
  const n = reloads();
  publish({ 'geo.csv': csv('FR') });
  const l = await waitReload(n, 'the CSV swap');
  assert.equal(l.event, 'reloaded', l.msg);
  const out = await flood(600);
  assert.ok(out.allowed >= 590, `in tier far now (the default 1000/s): allowed ${out.allowed} of 600`);
});

test('GeoIP tiers, country codes and CSV lines are checked before anything reaches the kernel: 422, nothing changed', async () => {
  const version = async (): Promise<number> => ((await daemon.status()) as { interfaces: { policy_version: number }[] }).interfaces[0]!.policy_version;
  const v0 = await version();
  for (const [what, update, pattern] of [
    ['a country that is not a code', { 'policy.yaml': policy(7, { near: ['DE', 'Germany'] }) }, /geoip\.tiers\.near\[1\].*not a two-letter country code/],
    ['a country in two tiers', { 'policy.yaml': policy(7, { near: ['DE'], mid: ['DE'] }) }, /country DE is in two tiers/],
    ['a CSV line that is not one', { 'policy.yaml': policy(7), 'geo.csv': `${csv('DE')}not,an,address\n` }, /geo\.csv:4: .*not an IP address/],
  ] as const) {
    publish(update);
    const r = await reload();
    assert.equal(r.statusCode, 422, `${what}: ${r.body}`);
    const e = r.json().error;
    assert.equal(e.code, 'SLUICE_E_CONFIG', what);
    assert.equal(e.problems[0].path, 'interfaces[0].policy', what);
    assert.match(e.problems[0].message, pattern, what);
    assert.equal(await version(), v0, `${what}: the kernel's policy was not touched`);
    assert.equal(nearRate(), 200, `${what}: the running policy stays`);
    const st = (await app.inject({ method: 'GET', url: '/v1/status' })).json();
    assert.equal(st.daemon.last_reload.ok, false);
  }
  publish({ 'policy.yaml': policy(200), 'geo.csv': csv('FR') });
  const ok = await reload();
  assert.equal(ok.statusCode, 200, ok.body);
});

test('lists the running program cannot hold (its size is fixed at load) are refused before the kernel: 422, nothing changed', async () => {
  const version = async (): Promise<number> => ((await daemon.status()) as { interfaces: { policy_version: number }[] }).interfaces[0]!.policy_version;
  const v0 = await version();
  const deny = Array.from({ length: 40 }, (_, i) => `198.18.0.${i + 1}/32`);
  publish({ 'sluice.yaml': config([], { max_list_entries: 65536, lists: { deny } }) });
  const r = await reload();
  assert.equal(r.statusCode, 422, r.body);
  const e = r.json().error;
  assert.equal(e.problems[0].path, 'interfaces[0].lists');
  assert.match(e.problems[0].message, /compile to 40 entries; the program running on .* holds 16/);
  assert.equal(await version(), v0, 'the kernel\'s policy was not touched');
  assert.deepEqual(loadSettings(place)?.lists.deny, []);
  publish({ 'sluice.yaml': config() });
  assert.equal((await reload()).statusCode, 200);
});

test('a valid file that cannot be applied is a failure: 500 SLUICE_E_RELOAD_FAILED, last_reload.ok false, the metric 0', async () => {
  const gone = { iface: 'eth0', netns: `${runId()}gone` }; // no such namespace
  publish({ 'sluice.yaml': config([gone]) });
  const r = await reload();
  assert.equal(r.statusCode, 500, r.body);
  const e = r.json().error;
  assert.equal(e.code, 'SLUICE_E_RELOAD_FAILED');
  assert.equal(e.problems.length, 1, r.body);
  assert.match(e.problems[0].path, new RegExp(`eth0 \\(netns ${gone.netns}\\)`));
  const st = (await app.inject({ method: 'GET', url: '/v1/status' })).json();
  assert.equal(st.daemon.last_reload.ok, false);
  assert.equal(st.daemon.last_reload.problems.length, 1);
  assert.ok(st.daemon.last_reload.changes.some((c: string) => /added, not protected/.test(c)), JSON.stringify(st.daemon.last_reload));
  const m = parsePrometheus((await app.inject({ method: 'GET', url: '/metrics' })).body).find((f) => f.name === 'sluice_config_last_reload_success');
  assert.equal(Number(m?.metrics[0]?.value), 0);
  assert.ok(logs.some((l) => l.event === 'reload_failed' && l.level === 50));
  assert.equal(st.interfaces.find((i: { iface: string }) => i.iface === place.iface).protected, true, 'what could be applied was');

  publish({ 'sluice.yaml': config() });
  const ok = await reload();
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json().ok, true);
});
