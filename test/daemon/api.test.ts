/**
 * The HTTP API's handlers without a socket (fastify inject()), over a daemon running in this
 * process on a veth in a namespace this test creates: authentication, input validation and the
 * one error shape, limits changed live, refused reloads, and /metrics as a scraper parses it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import parsePrometheus from 'parse-prometheus-text-format';
import pino from 'pino';
import type { Daemon } from '../../src/agent/daemon';
import { startDaemon } from '../../src/cli/daemon';
import { Protection } from '../../src/agent/protection';
import type { Place } from '../../src/agent/state';
import { assertNoLeftovers, runId, Testbed, type Veth } from '../lib/netns';
import { udpSend } from '../lib/traffic';
import { delta, nextWindow, totals, writeConfig } from './helpers';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), `sluice-api-${runId()}-`));
const configFile = join(dir, 'sluice.yaml');
const TOKEN = 'Qm4x8Zr2Vt6Lp0Ks9Wd3Hy7Bn1Jc5Fa';
const logs: Record<string, unknown>[] = [];
let veth: Veth;
let place: Place;
let cli: string;
let daemon: Daemon;
let app: FastifyInstance;
let authed: FastifyInstance;

function config(rate: number | string): Record<string, unknown> {
  return {
    interfaces: [{ iface: place.iface, netns: place.netns, max_entries: 2048, limits: { algorithm: 'fixed', rate } }],
    api: { socket: null },
  };
}

/** n datagrams as fast as they go, from the start of a fresh window; the change of the counters. */
async function flood(n: number): Promise<{ allowed: number; dropped: number }> {
  await nextWindow();
  const a = totals(place);
  await udpSend(tb, cli, veth.b.ipv4, n);
  return delta(a, totals(place));
}

before(async () => {
  cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  place = { iface: veth.b.ifname, netns: srv };
  writeConfig(configFile, config(100));
  await tb.exec(cli, 'ping', ['-c', '1', '-W', '1', veth.b.ipv4]);
  const logger = pino({ level: 'debug' }, { write: (line: string) => { logs.push(JSON.parse(line) as Record<string, unknown>); } });
  daemon = await startDaemon({ configFile, listen: false, watch: false, logger });
  app = daemon.api();
  authed = daemon.api(TOKEN);
});

after(async () => {
  await app?.close();
  await authed?.close();
  await daemon?.stop({ detach: true });
  try { await Protection.down(place); } catch { /* already down */ }
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers(runId(), { waitMs: 2000 });
});

test('with a token, every route needs Authorization: Bearer <token>; a wrong one is refused alike', async () => {
  for (const url of ['/v1/status', '/metrics', `/v1/stats?iface=${place.iface}&netns=${place.netns}`]) {
    const none = await authed.inject({ method: 'GET', url });
    assert.equal(none.statusCode, 401, url);
    assert.equal(none.json().error.code, 'SLUICE_E_API_UNAUTHORIZED');
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="sluice"');
  }
  const wrong = await authed.inject({ method: 'GET', url: '/v1/status', headers: { authorization: 'Bearer nope' } });
  assert.equal(wrong.statusCode, 401);
  const basic = await authed.inject({ method: 'GET', url: '/v1/status', headers: { authorization: `Basic ${TOKEN}` } });
  assert.equal(basic.statusCode, 401);
  const put = await authed.inject({ method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, netns: place.netns, limits: { rate: 5 } } });
  assert.equal(put.statusCode, 401, 'a change without the token is refused before it is looked at');
  const ok = await authed.inject({ method: 'GET', url: '/v1/status', headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(ok.statusCode, 200);
  assert.equal(ok.json().interfaces[0].limits.rate, 100, 'the refused PUT changed nothing');
});

test('the console page is served without a token (it holds no data); its API calls still need one', async () => {
  const page = await authed.inject({ method: 'GET', url: '/' });
  assert.equal(page.statusCode, 200);
  assert.match(page.headers['content-type'] as string, /text\/html/);
  assert.match(page.body, /<title>Sluice<\/title>/);
  assert.match(page.body, /DB-IP/, 'the GeoIP attribution');
  assert.match(page.body, /src="\/assets\/console\.js"/, 'its script, which reads the API');
  assert.equal((await authed.inject({ method: 'GET', url: '/?x=1' })).statusCode, 401, 'only the page itself is open');
});

test('every input is validated; errors come in one shape with a stable code', async () => {
  const cases: { method: 'GET' | 'PUT' | 'POST'; url: string; payload?: unknown; headers?: Record<string, string>; status: number; code: string; problems?: string[] }[] = [
    { method: 'GET', url: '/v1/stats?iface=nope0', status: 404, code: 'SLUICE_E_NOT_MANAGED' },
    { method: 'GET', url: '/v1/stats?netns=x', status: 400, code: 'SLUICE_E_API_BAD_REQUEST', problems: ['netns'] },
    { method: 'GET', url: '/v1/stats?iface=a/b', status: 400, code: 'SLUICE_E_API_BAD_REQUEST', problems: ['iface'] },
    { method: 'GET', url: `/v1/top?iface=${place.iface}&netns=${place.netns}&n=0`, status: 400, code: 'SLUICE_E_API_BAD_REQUEST', problems: ['n'] },
    { method: 'GET', url: `/v1/top?iface=${place.iface}&netns=${place.netns}&n=lots&x=1`, status: 400, code: 'SLUICE_E_API_BAD_REQUEST', problems: ['n', 'x'] },
    { method: 'GET', url: '/v1/top', status: 400, code: 'SLUICE_E_API_BAD_REQUEST', problems: ['iface'] },
    {
      method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, netns: place.netns, limits: { rate: -1, bytes_rate: 'lots', algorithm: 'leaky', window: '2h', extra: 1 } },
      status: 400, code: 'SLUICE_E_API_BAD_REQUEST', problems: ['limits.algorithm', 'limits.bytes_rate', 'limits.extra', 'limits.rate', 'limits.window'],
    },
    { method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, netns: place.netns, limits: { rate: 'none' } }, status: 400, code: 'SLUICE_E_API_BAD_REQUEST', problems: ['limits.rate'] },
    { method: 'PUT', url: '/v1/limits', payload: { limits: {} }, status: 400, code: 'SLUICE_E_API_BAD_REQUEST', problems: ['iface'] },
    { method: 'PUT', url: '/v1/limits', payload: '{"iface": ', headers: { 'content-type': 'application/json' }, status: 400, code: 'SLUICE_E_API_BAD_REQUEST' },
    { method: 'PUT', url: '/v1/limits', payload: 'rate=5', headers: { 'content-type': 'text/plain' }, status: 415, code: 'SLUICE_E_API_BAD_REQUEST' },
    { method: 'PUT', url: '/v1/limits', payload: { iface: 'eth9', limits: { rate: 5 } }, status: 404, code: 'SLUICE_E_NOT_MANAGED' },
    { method: 'POST', url: '/v1/reload', payload: { now: true }, status: 400, code: 'SLUICE_E_API_BAD_REQUEST' },
    { method: 'GET', url: '/v2/everything', status: 404, code: 'SLUICE_E_API_NOT_FOUND' },
  ];
  for (const c of cases) {
    const r = await app.inject({ method: c.method, url: c.url, ...(c.payload !== undefined ? { payload: c.payload as string } : {}), ...(c.headers ? { headers: c.headers } : {}) });
    const what = `${c.method} ${c.url} ${JSON.stringify(c.payload ?? '')}: ${r.body}`;
    assert.equal(r.statusCode, c.status, what);
    const body = r.json() as { error: { code: string; message: string; problems?: { path: string; message: string }[] } };
    assert.deepEqual(Object.keys(body), ['error'], what);
    assert.equal(body.error.code, c.code, what);
    assert.ok(body.error.message.length > 0, what);
    if (c.problems) assert.deepEqual(body.error.problems!.map((p) => p.path).sort(), c.problems, what);
  }
  const st = await app.inject({ method: 'GET', url: '/v1/status' });
  assert.equal(st.json().interfaces[0].limits.rate, 100, 'no refused request changed anything');
});

test('PUT /v1/limits changes the limit and the next packets obey', async () => {
  const before = await flood(2000);
  assert.ok(before.allowed >= 90 && before.allowed <= 2 * 100, `allowed ${before.allowed} under 100/s (fixed window: at most two windows)`);

  const r = await app.inject({ method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, netns: place.netns, limits: { rate: '1k' } } });
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(r.json(), { iface: place.iface, netns: place.netns, limits: { algorithm: 'fixed', rate: 1000, rate_period_ms: 1000, burst: 0, bytes_rate: null, bytes_period_ms: 1000, bytes_burst: 0, window_ms: 1000, key_v4: 32, key_v6: 64 } });
  const after = await flood(3000);
  assert.ok(after.allowed >= 900 && after.allowed <= 2000, `allowed ${after.allowed} of 3000 under 1000/s (was 100/s)`);
  assert.ok(after.dropped >= 900, `dropped ${after.dropped}`);
  assert.ok(logs.some((l) => l['event'] === 'limits_set'), 'the change is logged');

  const st = await app.inject({ method: 'GET', url: '/v1/status' });
  assert.equal(st.json().interfaces[0].limits_from, 'api');
});

test('POST /v1/reload: an invalid file is refused (422, every problem) and the running policy stays', async () => {
  writeConfig(configFile, `interfaces:\n  - iface: ${place.iface}\n    netns: ${place.netns}\n    limits: { rate: 0, window: soon }\nlog: { level: loud }\n`);
  const r = await app.inject({ method: 'POST', url: '/v1/reload', headers: { 'content-type': 'application/json' } });
  assert.equal(r.statusCode, 422, r.body);
  const e = r.json().error;
  assert.equal(e.code, 'SLUICE_E_CONFIG');
  assert.deepEqual(e.problems.map((p: { path: string; line: number }) => `${p.path}@${p.line}`), ['interfaces[0].limits.rate@4', 'interfaces[0].limits.window@4', 'log.level@5']);
  assert.ok(logs.some((l) => l['event'] === 'reload_refused' && (l['problems'] as string[]).length === 3));
  const d = await flood(3000);
  assert.ok(d.allowed >= 900 && d.allowed <= 2000, `still 1000/s: allowed ${d.allowed}`);

  writeConfig(configFile, config(50));
  const ok = await app.inject({ method: 'POST', url: '/v1/reload', headers: { 'content-type': 'application/json' } });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json().ok, true);
  assert.ok(ok.json().changes.some((c: string) => /limits set through the API replaced/.test(c)), ok.body);
  const d2 = await flood(2000);
  assert.ok(d2.allowed >= 45 && d2.allowed <= 2 * 50, `the file's 50/s now: allowed ${d2.allowed}`);
});

test('GET /v1/top and /v1/stats read the live state', async () => {
  const top = await app.inject({ method: 'GET', url: `/v1/top?iface=${place.iface}&netns=${place.netns}&n=5` });
  assert.equal(top.statusCode, 200, top.body);
  const entries = top.json().top as { key: string; dropped: number }[];
  assert.ok(entries.some((e) => e.key === `${veth.a.ipv4}/32` && e.dropped > 0), top.body);
  // Rates against the previous walk (at least 0.5 s before): an idle source reads 0 packets/s,
  // exactly (its word and drops did not move).
  await new Promise((r) => setTimeout(r, 600));
  const again = (await app.inject({ method: 'GET', url: `/v1/top?iface=${place.iface}&netns=${place.netns}&n=5` })).json() as { rate: { seconds: number } | null; top: { key: string; pps: number | null; rate_unknown: string | null }[] };
  assert.ok(again.rate && again.rate.seconds >= 0.5, JSON.stringify(again.rate));
  const idle = again.top.find((e) => e.key === `${veth.a.ipv4}/32`);
  assert.deepEqual([idle?.pps, idle?.rate_unknown], [0, null], JSON.stringify(idle));
  const all = await app.inject({ method: 'GET', url: '/v1/stats' });
  assert.equal(all.json().interfaces.length, 1);
  assert.ok(all.json().interfaces[0].dropped_packets > 0);
});

test('/metrics parses as Prometheus text and has the expected series with sensible values', async () => {
  const r = await app.inject({ method: 'GET', url: '/metrics' });
  assert.equal(r.statusCode, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const families = new Map(parsePrometheus(r.body).map((f) => [f.name, f]));
  const here = { iface: place.iface, netns: place.netns! };
  const value = (name: string, labels: Record<string, string>): number => {
    const f = families.get(name);
    assert.ok(f, `no metric ${name}`);
    const s = f.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
    assert.ok(s, `no ${name}${JSON.stringify(labels)}`);
    return Number(s.value);
  };
  const t = totals(place);
  for (const [name, type] of Object.entries({
    sluice_up: 'GAUGE', sluice_packets_total: 'COUNTER', sluice_bytes_total: 'COUNTER', sluice_reason_packets_total: 'COUNTER',
    sluice_reason_bytes_total: 'COUNTER', sluice_new_states_total: 'COUNTER', sluice_state_entries: 'GAUGE', sluice_state_max_entries: 'GAUGE',
    sluice_state_evictions_total: 'COUNTER', sluice_policy_version: 'GAUGE', sluice_events_suppressed_total: 'COUNTER',
    sluice_events_lost_total: 'COUNTER', sluice_config_reloads_total: 'COUNTER', sluice_config_last_reload_success: 'GAUGE',
  })) assert.equal(families.get(name)?.type, type, name);

  assert.equal(value('sluice_up', here), 1);
  const dropped = value('sluice_packets_total', { ...here, rule_id: '0', rule: 'default', verdict: 'drop' });
  const passed = value('sluice_packets_total', { ...here, rule_id: '0', verdict: 'pass' });
  assert.ok(dropped > 5000, `dropped ${dropped} after the floods`);
  assert.ok(passed > 1000, `passed ${passed}`);
  assert.ok(dropped <= t.dropped_packets && passed <= t.allowed_packets, 'no more than the maps hold');
  assert.equal(value('sluice_reason_packets_total', { ...here, rule_id: '0', reason: 'limit' }), dropped, 'every drop of the default rule is a limit drop');
  assert.ok(value('sluice_bytes_total', { ...here, rule_id: '0', verdict: 'drop' }) >= dropped * 60, 'bytes of dropped frames');
  const entries = value('sluice_state_entries', here);
  assert.ok(entries >= 1 && entries <= 2048, `state entries ${entries}`);
  assert.equal(value('sluice_state_max_entries', here), 2048);
  assert.ok(value('sluice_new_states_total', { ...here, rule_id: '0' }) >= 1);
  assert.equal(value('sluice_state_evictions_total', here), 0, 'two sources never fill 2048 entries');
  assert.ok(value('sluice_policy_version', here) >= 3, 'attach, the PUT and the reload each flipped the policy');
  assert.ok(value('sluice_events_suppressed_total', here) > 0, 'thousands of drops exceed the event budget');
  assert.equal(value('sluice_events_lost_total', here), 0);
  assert.equal(value('sluice_config_reloads_total', { result: 'error' }), 1);
  assert.equal(value('sluice_config_reloads_total', { result: 'ok' }), 2, 'the start and one reload');
  assert.equal(value('sluice_config_last_reload_success', {}), 1);
  assert.ok(families.has('nodejs_eventloop_lag_seconds'), 'the process metrics are there too');

  // Counters never go down between scrapes.
  await flood(500);
  const again = new Map(parsePrometheus((await app.inject({ method: 'GET', url: '/metrics' })).body).map((f) => [f.name, f]));
  const d2 = Number(again.get('sluice_packets_total')!.metrics.find((m) => m.labels?.['rule_id'] === '0' && m.labels['verdict'] === 'drop')!.value);
  assert.ok(d2 > dropped, `${d2} after ${dropped}`);
});
