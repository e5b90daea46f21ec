/**
 * `sluice run` as operators run it: a child process protecting a veth in a namespace this test
 * creates, driven by its config file, signals and its HTTP API; traffic over the limit is sent
 * between two namespaces. The tests run in order and share the daemon.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Protection } from '../../src/agent/protection';
import type { Place } from '../../src/agent/state';
import { assertNoLeftovers, run, runId, Testbed, type Veth } from '../lib/netns';
import { udpReceiver, udpSend } from '../lib/traffic';
import { delta, http, killDaemon, REPO, sleep, startDaemon, totals, writeConfig, freePort, type DaemonProcess } from './helpers';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), `sluice-daemon-${runId()}-`));
const configFile = join(dir, 'sluice.yaml');
const socketPath = join(dir, 'api.sock');
const tokenFile = join(dir, 'token');
const TOKEN = 'k7Jd9q2LxP0vRm5ZtW8yNb3Hc6Fg1Sa4';
let veth: Veth;
let place: Place;
let port: number;
let cli: string;
const daemons: DaemonProcess[] = [];

function config(limits: Record<string, unknown>): Record<string, unknown> {
  return {
    interfaces: [{ iface: place.iface, netns: place.netns, max_entries: 4096, limits }],
    api: { socket: socketPath, tcp: { listen: `127.0.0.1:${port}`, token_file: tokenFile } },
    log: { level: 'info' },
    reconcile_interval: '1s',
  };
}

function start(args: string[] = []): DaemonProcess {
  const d = startDaemon(configFile, args);
  daemons.push(d);
  return d;
}

const unix = { socketPath };
/** Send n datagrams as fast as they go; the change of the interface's counters. */
async function flood(n: number): Promise<{ allowed: number; dropped: number }> {
  const a = totals(place);
  await udpSend(tb, cli, veth.b.ipv4, n);
  return delta(a, totals(place));
}

before(async () => {
  cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  place = { iface: veth.b.ifname, netns: srv };
  port = await freePort();
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  writeConfig(configFile, config({ algorithm: 'fixed', rate: 200 }));
  // Resolve the neighbour first so that no datagram waits in (or is dropped from) the ARP queue.
  await tb.exec(cli, 'ping', ['-c', '1', '-W', '1', veth.b.ipv4]);
});

after(async () => {
  for (const d of daemons) await killDaemon(d);
  try { await Protection.down(place); } catch { /* never came up */ }
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers(runId(), { waitMs: 2000 });
});

let daemon: DaemonProcess;

test('the daemon protects the configured interface: traffic over the limit is dropped', async () => {
  daemon = start();
  const ready = await daemon.waitLog((l) => l.event === 'ready', 'ready');
  assert.equal(ready['protected'], 1);
  assert.ok(daemon.logs.some((l) => l.event === 'attached' && l['iface'] === place.iface), 'logged the attach');

  const rx = await udpReceiver(tb, place.netns!, 9000, 5000);
  const sent = await udpSend(tb, cli, veth.b.ipv4, 2000);
  const { received } = await rx.result();
  assert.ok(sent.ms < 900, `sending took ${sent.ms} ms; the bound below assumes less than a second`);
  assert.ok(received >= 150 && received <= 400, `received ${received} of 2000 with 200 packets per second (fixed window: at most two windows)`);

  const s = await http(unix, 'GET', `/v1/stats?iface=${place.iface}&netns=${place.netns}`);
  assert.equal(s.status, 200, s.text);
  assert.ok(s.json.dropped_packets >= 1600, `dropped ${s.json.dropped_packets}`);
  assert.ok(s.json.reasons.limit.packets >= 1600);
});

test('the Unix socket is root-only and needs no token; TCP answers only with the bearer token', async () => {
  assert.equal(statSync(socketPath).mode & 0o777, 0o600);
  const st = await http(unix, 'GET', '/v1/status');
  assert.equal(st.status, 200, st.text);
  assert.equal(st.json.interfaces[0].iface, place.iface);
  assert.equal(st.json.interfaces[0].protected, true);
  assert.equal(st.json.interfaces[0].state_max_entries, 4096);

  const tcp = { host: '127.0.0.1', port };
  const none = await http(tcp, 'GET', '/v1/status');
  assert.equal(none.status, 401);
  assert.equal(none.json.error.code, 'SLUICE_E_API_UNAUTHORIZED');
  assert.match(String(none.headers['www-authenticate']), /^Bearer/);
  const wrong = await http(tcp, 'GET', '/v1/status', { headers: { authorization: `Bearer ${TOKEN.slice(0, -1)}x` } });
  assert.equal(wrong.status, 401);
  const metricsNoToken = await http(tcp, 'GET', '/metrics');
  assert.equal(metricsNoToken.status, 401, 'metrics need the token on TCP too');
  const ok = await http(tcp, 'GET', '/v1/status', { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.interfaces[0].protected, true);
});

test('PUT /v1/limits changes the limit and the next packets obey', async () => {
  const bad = await http(unix, 'PUT', '/v1/limits', { body: { iface: place.iface, netns: place.netns, limits: { rate: 0, burts: 5 } } });
  assert.equal(bad.status, 400, bad.text);
  assert.equal(bad.json.error.code, 'SLUICE_E_API_BAD_REQUEST');
  assert.deepEqual(bad.json.error.problems.map((p: { path: string }) => p.path).sort(), ['limits.burts', 'limits.rate']);

  const r = await http(unix, 'PUT', '/v1/limits', { body: { iface: place.iface, netns: place.netns, limits: { rate: '1k' } } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.limits.rate, 1000);
  const d = await flood(3000);
  assert.ok(d.allowed > 400 && d.allowed <= 2000, `allowed ${d.allowed} after raising the limit to 1000/s (was 200/s)`);
  assert.ok(d.dropped >= 1000, `dropped ${d.dropped}`);
});

test('a changed config file is reloaded (written by rename, as editors save)', async () => {
  const n = daemon.logs.length;
  writeConfig(configFile, config({ algorithm: 'fixed', rate: 300 }));
  const l = await daemon.waitLog((x) => daemon.logs.indexOf(x) >= n && x.event === 'reloaded' && x['source'] === 'file', 'the reload of the changed file');
  assert.ok((l['changes'] as string[]).some((c) => /limits updated/.test(c)), JSON.stringify(l['changes']));
  const st = await http(unix, 'GET', '/v1/status');
  assert.equal(st.json.interfaces[0].limits.rate, 300);
  assert.equal(st.json.interfaces[0].limits_from, 'config', 'the file replaces limits set through the API');
  const d = await flood(2000);
  assert.ok(d.allowed <= 600 && d.dropped >= 1300, `allowed ${d.allowed}, dropped ${d.dropped} under 300/s`);
});

test('an invalid config reload (SIGHUP) is refused with every problem listed, and the old policy keeps working', async () => {
  const n = daemon.logs.length;
  writeConfig(configFile, `interfaces:
  - iface: ${place.iface}
    netns: ${place.netns}
    max_entries: 4096
    limits: { rate: 0, burts: 5 }
    lists: { deny: [not-an-address] }
api: { socket: ${socketPath} }
`);
  daemon.child.kill('SIGHUP');
  const refused = await daemon.waitLog((x) => daemon.logs.indexOf(x) >= n && x.event === 'reload_refused' && x['source'] === 'sighup', 'the refused SIGHUP reload');
  const problems = refused['problems'] as string[];
  assert.equal(problems.length, 3, problems.join('\n'));
  assert.ok(problems.some((p) => /:5: interfaces\[0\]\.limits\.rate: rate "0" must be at least 1/.test(p)), problems.join('\n'));
  assert.ok(problems.some((p) => /interfaces\[0\]\.limits\.burts: unknown key \(did you mean burst\?\)/.test(p)));
  assert.ok(problems.some((p) => /interfaces\[0\]\.lists\.deny\[0\]/.test(p)));
  assert.equal(refused.level, 50, 'logged as an error');

  assert.equal(daemon.child.exitCode, null, 'the daemon keeps running');
  const st = await http(unix, 'GET', '/v1/status');
  assert.equal(st.status, 200);
  assert.equal(st.json.daemon.last_reload.ok, false);
  assert.equal(st.json.interfaces[0].limits.rate, 300, 'the running policy stays');
  const d = await flood(2000);
  assert.ok(d.allowed <= 600 && d.dropped >= 1300, `allowed ${d.allowed}, dropped ${d.dropped}: still 300/s`);

  // Back to a valid file.
  const m = daemon.logs.length;
  writeConfig(configFile, config({ algorithm: 'fixed', rate: 200 }));
  await daemon.waitLog((x) => daemon.logs.indexOf(x) >= m && x.event === 'reloaded', 'the reload of the repaired file');
});

test('a protection taken down behind the daemon is restored at the next reconcile', async () => {
  const n = daemon.logs.length;
  const r = await run(process.execPath, [join(REPO, 'bin', 'sluice.js'), 'down', '--iface', place.iface, '--netns', place.netns!]);
  assert.equal(r.code, 0, r.stderr);
  await daemon.waitLog((x) => daemon.logs.indexOf(x) >= n && x.event === 'attached' && x['reason'] === 'periodic', 're-attach after sluice down');
  const d = await flood(2000);
  // At most two windows of 200; the totals may also hold a stray control packet of the veth's own
  // (IPv6 neighbour discovery, MLD), passed by the default rule.
  assert.ok(d.allowed <= 400 + 3 && d.dropped >= 1600 - 3, `allowed ${d.allowed}, dropped ${d.dropped}`);
});

test('a reload brings added interfaces up, takes removed ones down, and logs load-time changes it cannot make in place', async () => {
  const second = await tb.addVeth(cli, place.netns!);
  const other: Place = { iface: second.b.ifname, netns: place.netns };
  const base = config({ algorithm: 'fixed', rate: 200 }) as { interfaces: Record<string, unknown>[] };
  let n = daemon.logs.length;
  writeConfig(configFile, {
    ...base,
    interfaces: [{ ...base.interfaces[0], max_entries: 8192 }, { iface: other.iface, netns: other.netns, limits: { rate: 50 } }],
  });
  const added = await daemon.waitLog((x) => daemon.logs.indexOf(x) >= n && x.event === 'reloaded', 'the reload that adds an interface');
  const changes = added['changes'] as string[];
  assert.ok(changes.some((c) => c.startsWith(`${other.iface} (netns ${other.netns}): added, protected`)), changes.join('\n'));
  assert.ok(changes.some((c) => /max_entries 4096 -> 8192 pending/.test(c)), changes.join('\n'));
  const note = daemon.logs.find((x) => daemon.logs.indexOf(x) >= n && x.event === 'needs_reattach');
  assert.ok(note && /sluice down --iface .* and then `kill -HUP/.test(note.msg), note?.msg);
  const st = await http(unix, 'GET', '/v1/status');
  assert.equal(st.json.interfaces[0].state_max_entries, 4096, 'the running map is kept');
  assert.equal(st.json.interfaces[0].pending, 'max_entries 4096 -> 8192');
  assert.equal(st.json.interfaces[1].protected, true);
  assert.equal(totals(other).dropped_packets, 0);

  n = daemon.logs.length;
  writeConfig(configFile, base);
  const removed = await daemon.waitLog((x) => daemon.logs.indexOf(x) >= n && x.event === 'reloaded', 'the reload that removes it');
  assert.ok((removed['changes'] as string[]).some((c) => c.includes('removed from the config, protection taken down')));
  assert.throws(() => Protection.open(other), (e: { code?: string }) => e.code === 'SLUICE_E_NOT_PROTECTED');
  const after = await http(unix, 'GET', '/v1/status');
  assert.equal(after.json.interfaces.length, 1);
  assert.equal(after.json.interfaces[0].pending, undefined);
});

test('kill -9 under traffic: traffic over the limit is still dropped, and a restart adopts with the counters it had', async () => {
  // 3,000 packets per second for 4 s against 200 per second.
  const sending = udpSend(tb, cli, veth.b.ipv4, 12_000, 3000);
  await sleep(1000);
  const before = totals(place);
  assert.equal((await killDaemon(daemon)).signal, 'SIGKILL');
  const atKill = totals(place);
  await sleep(1500);
  const without = delta(atKill, totals(place));
  assert.ok(without.dropped >= 2000, `with no daemon, ${without.dropped} packets were dropped in 1.5 s of 3000/s against 200/s`);
  assert.ok(without.allowed <= 2 * 200 + 10, `with no daemon, ${without.allowed} passed in 1.5 s against 200/s`);
  await sending;
  const last = totals(place);
  assert.ok(last.dropped_packets > before.dropped_packets);

  daemon = start();
  const adopted = await daemon.waitLog((l) => l.event === 'adopted', 'adoption');
  assert.equal(adopted['dropped_packets'], last.dropped_packets, 'the log of the adoption shows the counters kept');
  await daemon.waitLog((l) => l.event === 'ready', 'ready');
  const s = await http(unix, 'GET', `/v1/stats?iface=${place.iface}&netns=${place.netns}`);
  assert.equal(s.status, 200, s.text);
  assert.ok(s.json.dropped_packets >= last.dropped_packets && s.json.allowed_packets >= last.allowed_packets,
    `after the restart: ${s.json.allowed_packets} allowed, ${s.json.dropped_packets} dropped; before it: ${last.allowed_packets}, ${last.dropped_packets}`);
  const d = await flood(2000);
  assert.ok(d.allowed <= 400 && d.dropped >= 1600, `the adopted protection enforces: allowed ${d.allowed}, dropped ${d.dropped}`);
});

test('SIGTERM leaves protection in force; with --detach-on-exit it is taken down', async () => {
  const end = await killDaemon(daemon, 'SIGTERM');
  assert.equal(end.code, 0);
  assert.ok(daemon.logs.some((l) => l.event === 'stop' && l['detached'] === false));
  const d1 = await flood(2000);
  assert.ok(d1.allowed <= 400 && d1.dropped >= 1600, `after SIGTERM: allowed ${d1.allowed}, dropped ${d1.dropped}`);

  daemon = start(['--detach-on-exit']);
  await daemon.waitLog((l) => l.event === 'ready', 'ready');
  assert.equal((await killDaemon(daemon, 'SIGTERM')).code, 0);
  assert.ok(daemon.logs.some((l) => l.event === 'stop' && l['detached'] === true));
  assert.throws(() => Protection.open(place), (e: { code?: string }) => e.code === 'SLUICE_E_NOT_PROTECTED');
});
