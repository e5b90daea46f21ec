/**
 * The API the console stands on (issue 16), without a browser: the page and its assets are served
 * without a token and load nothing from elsewhere; every API call the page makes is a route of
 * docs/api.md; the daemon's history (GET /v1/history) and the `rates` of GET /v1/stats are the
 * same readings; the deny and allow lists, a block for a while, and a rule's dry-run switch go
 * through documented calls and reach the kernel (counted by reason there).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import type { Daemon } from '../../src/agent/daemon';
import { startDaemon } from '../../src/cli/daemon';
import { Protection } from '../../src/agent/protection';
import { takeSnapshot } from '../../src/agent/report';
import type { Place } from '../../src/agent/state';
import { CONSOLE_JS } from '../../src/api/console-script';
import { assertNoLeftovers, runId, Testbed, type Veth } from '../lib/netns';
import { udpSend } from '../lib/traffic';
import { REPO, sleep, writeConfig } from './helpers';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), `sluice-consapi-${runId()}-`));
const TOKEN = 'Zk3v9Qp1Lr7Mx5Nc2Bw8Hd4Ty6Gf0Ja';
let veth: Veth;
let place: Place;
let cli: string;
let daemon: Daemon;
let app: FastifyInstance;
let authed: FastifyInstance;
const q = (): string => `iface=${place.iface}&netns=${place.netns}`;

/** Packets of the interface by reason name since attach, from the kernel's counters. */
function reasons(): Record<string, number> {
  const p = Protection.open(place);
  try {
    return Object.fromEntries(Object.entries(takeSnapshot(p).totals.reasons).map(([k, v]) => [k, v.packets]));
  } finally {
    p.close();
  }
}
const grew = (a: Record<string, number>, b: Record<string, number>, k: string): number => (b[k] ?? 0) - (a[k] ?? 0);

before(async () => {
  cli = await tb.addNs('cac');
  const srv = await tb.addNs('cas');
  veth = await tb.addVeth(cli, srv);
  place = { iface: veth.b.ifname, netns: srv };
  const policy = join(dir, 'policy.yaml');
  writeFileSync(policy, 'defaults: { algorithm: token, rate: 100/s, burst: 10 }\nrules:\n  - name: udp7000\n    match: { proto: udp, dst_port: 7000 }\n    limit: { algorithm: token, rate: 50/s, burst: 10 }\n');
  const configFile = join(dir, 'sluice.yaml');
  writeConfig(configFile, { interfaces: [{ iface: place.iface, netns: place.netns, max_entries: 2048, policy }], api: { socket: null } });
  daemon = await startDaemon({ configFile, listen: false, watch: false, logger: pino({ level: 'silent' }) });
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

test('the console and its assets are served without a token, from this origin only; its API calls need the token', async () => {
  for (const [url, type] of [['/', /text\/html/], ['/assets/console.js', /javascript/], ['/assets/console.css', /text\/css/], ['/assets/uplot.min.js', /javascript/], ['/assets/uplot.min.css', /text\/css/]] as const) {
    const r = await authed.inject({ method: 'GET', url });
    assert.equal(r.statusCode, 200, url);
    assert.match(r.headers['content-type'] as string, type, url);
    assert.equal(r.headers['x-frame-options'], 'DENY', url);
    assert.match(r.headers['content-security-policy'] as string, /script-src 'self'; .*connect-src 'self'.*frame-ancestors 'none'/, url);
  }
  const page = (await authed.inject({ method: 'GET', url: '/' })).body;
  assert.doesNotMatch(page, /prompt\(|src="(?!\/assets\/)|href="(?!\/assets\/|https:\/\/db-ip\.com"|https:\/\/github\.com\/leeoniya\/uPlot")/, 'no prompt(), nothing loaded from elsewhere (links to the attributions aside)');
  assert.match(page, /<form id="login"[\s\S]*type="password" autocomplete="current-password"/, 'a login form a password manager can fill');
  assert.match(page, /DB-IP/, 'the GeoIP attribution');
  const uplot = (await authed.inject({ method: 'GET', url: '/assets/uplot.min.js' })).body;
  assert.equal(uplot, readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8'), 'uPlot from node_modules, as published');
  assert.doesNotMatch(CONSOLE_JS, /\bprompt\(|\bEventSource\b/, 'no prompt(); events through fetch, which carries the token');
  assert.equal((await authed.inject({ method: 'GET', url: '/assets/other.js' })).statusCode, 401, 'only the assets themselves are open');
  assert.equal((await authed.inject({ method: 'GET', url: `/v1/history?${q()}` })).statusCode, 401);
});

test('every API call the page makes is a route of docs/api.md (no endpoint only the page can use)', () => {
  const doc = readFileSync(join(REPO, 'docs', 'api.md'), 'utf8');
  const routes = new Set([...doc.matchAll(/^\| `(GET|PUT|POST) (\/v1\/[a-z/]+)/gm)].map((m) => m[2]!));
  const calls = [...CONSOLE_JS.matchAll(/"(GET|PUT|POST)", "(\/v1\/[a-z/]+)/g)].map((m) => `${m[1]} ${m[2]}`);
  const streamed = [...CONSOLE_JS.matchAll(/fetch\("(\/v1\/[a-z/]+)/g)].map((m) => `GET ${m[1]}`);
  const all = new Set([...calls, ...streamed]);
  assert.ok(all.size >= 10, [...all].join(', '));
  for (const c of all) {
    const [method, path] = c.split(' ') as [string, string];
    assert.ok(routes.has(path), `${c} is not in docs/api.md's table of routes`);
    assert.ok(doc.includes(`| \`${method} ${path}`), `${c}: docs/api.md documents ${path} with another method`);
  }
});

test('every route of docs/api.md is served', async () => {
  const doc = readFileSync(join(REPO, 'docs', 'api.md'), 'utf8');
  const routes = [...doc.matchAll(/^\| `(GET|PUT|POST) (\/v1\/[a-z/]+)/gm)].map((m) => [m[1] as 'GET' | 'PUT' | 'POST', m[2]!] as const);
  assert.ok(routes.length >= 12);
  for (const [method, url] of routes) {
    if (url === '/v1/events') continue; // a stream: served, see test/e2e/events.test.ts
    const r = await app.inject({ method, url, ...(method === 'GET' ? {} : { payload: {} }) });
    assert.notEqual(r.json().error?.code, 'SLUICE_E_API_NOT_FOUND', `${method} ${url}: ${r.body}`);
  }
});

test('the history holds one point a second, and the rates of /v1/stats are its last point', { timeout: 30_000 }, async () => {
  await udpSend(tb, cli, veth.b.ipv4, 300, 600, 9000);
  await sleep(2200);
  const h = (await app.inject({ method: 'GET', url: `/v1/history?${q()}` })).json();
  const s = (await app.inject({ method: 'GET', url: `/v1/stats?${q()}` })).json();
  assert.ok(h.t.length >= 2, `points: ${h.t.length}`);
  for (const k of ['seconds', 'allowed_pps', 'dropped_pps', 'allowed_bps', 'dropped_bps', 'new_states_per_sec', 'state_entries', 'state_max_entries']) assert.equal(h[k].length, h.t.length, k);
  for (const r of h.rules) assert.equal(r.allowed_pps.length, h.t.length);
  assert.deepEqual(h.rules.map((r: { name: string }) => r.name), ['default', 'udp7000']);
  for (let i = 1; i < h.t.length; i++) assert.ok(h.t[i] - h.t[i - 1] >= 500 && h.t[i] - h.t[i - 1] <= 3000, `a point a second: ${h.t[i] - h.t[i - 1]} ms`);
  const sum = (a: number[]): number => a.reduce((x, y) => x + y, 0);
  const seen = h.t.map((_: number, i: number) => (h.allowed_pps[i] + h.dropped_pps[i]) * h.seconds[i]);
  assert.ok(Math.abs(sum(seen) - 300) <= 3, `the history accounts for the 300 packets sent: ${sum(seen)}`);
  assert.ok(sum(h.reasons['limit'] ?? []) > 0, 'drops by reason');
  const last = h.t.length - 1;
  const later = (await app.inject({ method: 'GET', url: `/v1/history?${q()}&since=${h.t[last]}` })).json();
  assert.ok(later.t.every((t: number) => t > h.t[last]), 'since: only what is new');
  if (s.rates.at === new Date(h.t[last]).toISOString()) {
    assert.equal(+s.rates.allowed_pps.toFixed(2), h.allowed_pps[last]);
    assert.equal(+s.rates.dropped_pps.toFixed(2), h.dropped_pps[last]);
  } else {
    assert.ok(Date.parse(s.rates.at) > h.t[last], 'the rates are the newest point');
  }
  assert.ok(Math.abs(s.rates.seconds - 1) < 0.5, `rates over one second: ${s.rates.seconds}`);
  const bad = await app.inject({ method: 'GET', url: `/v1/history?${q()}&since=yesterday` });
  assert.equal(bad.statusCode, 400);
});

test('deny, allow and a block for a while through POST /v1/lists reach the kernel, and the block ends on time', { timeout: 30_000 }, async () => {
  const src = `${veth.a.ipv4}/32`;
  const post = (body: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/lists', payload: { iface: place.iface, netns: place.netns, ...body } });
  let r = await post({ list: 'deny', op: 'add', prefix: veth.a.ipv4, for: '2s' });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().prefix, src, 'stored canonical');
  assert.ok(Date.parse(r.json().until) > Date.now());
  let a = reasons();
  await udpSend(tb, cli, veth.b.ipv4, 50, 0, 9001);
  let b = reasons();
  assert.equal(grew(a, b, 'denylist'), 50, 'every packet of the blocked source is dropped by the deny list');
  const pol = (await app.inject({ method: 'GET', url: `/v1/policy?${q()}` })).json();
  assert.deepEqual(pol.lists.deny.map((e: { prefix: string; from: string }) => [e.prefix, e.from]), [[src, 'api']]);
  // Over when its time is up: the daemon takes it off the list.
  const end = Date.now() + 10_000;
  while ((await app.inject({ method: 'GET', url: `/v1/policy?${q()}` })).json().lists.deny.length && Date.now() < end) await sleep(200);
  a = reasons();
  await udpSend(tb, cli, veth.b.ipv4, 5, 0, 9001);
  b = reasons();
  assert.equal(grew(a, b, 'denylist'), 0, 'the block is over');
  r = await post({ list: 'allow', op: 'add', prefix: src });
  assert.equal(r.statusCode, 200, r.body);
  a = reasons();
  await udpSend(tb, cli, veth.b.ipv4, 300, 0, 9001);
  b = reasons();
  assert.equal(grew(a, b, 'allowlist'), 300, 'allowed: no limit');
  r = await post({ list: 'allow', op: 'del', prefix: src });
  assert.equal(r.statusCode, 200, r.body);
  r = await post({ list: 'allow', op: 'del', prefix: src });
  assert.equal(r.statusCode, 404);
  assert.equal(r.json().error.code, 'SLUICE_E_NOT_IN_LIST');
  for (const body of [{ list: 'allow', op: 'add', prefix: src, for: '5m' }, { list: 'deny', op: 'add', prefix: '10.0.0.0/99' }, { list: 'mgmt', op: 'add', prefix: src }, { list: 'deny', op: 'add', prefix: src, for: '5' }]) {
    const x = await post(body);
    assert.equal(x.statusCode, 400, `${JSON.stringify(body)}: ${x.body}`);
    assert.equal(x.json().error.code, 'SLUICE_E_API_BAD_REQUEST');
  }
  assert.deepEqual((await app.inject({ method: 'GET', url: `/v1/policy?${q()}` })).json().lists, { deny: [], allow: [], mgmt: [] }, 'nothing was left behind');
});

test('a rule to dry-run and back through POST /v1/rules/mode: its drops become would-drops, then drops again', { timeout: 30_000 }, async () => {
  const mode = (rule: unknown, m: string) => app.inject({ method: 'POST', url: '/v1/rules/mode', payload: { iface: place.iface, netns: place.netns, rule, mode: m } });
  let r = await mode('udp7000', 'dry-run');
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual([r.json().rule.mode, r.json().rule.dry_run_from], ['dry-run', 'api']);
  let a = reasons();
  await udpSend(tb, cli, veth.b.ipv4, 200, 0, 7000);
  let b = reasons();
  assert.equal(grew(a, b, 'limit'), 0, 'no drop in dry-run');
  assert.ok(grew(a, b, 'dryrun') >= 150, `counted as would-drop: ${grew(a, b, 'dryrun')}`);
  r = await mode(1, 'enforce');
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().rule.mode, 'enforce');
  await sleep(1100);
  a = reasons();
  await udpSend(tb, cli, veth.b.ipv4, 200, 0, 7000);
  b = reasons();
  assert.ok(grew(a, b, 'limit') >= 150, `enforced again: ${grew(a, b, 'limit')} dropped`);
  for (const [rule, m, status] of [['default', 'dry-run', 400], ['nope', 'dry-run', 400], ['udp7000', 'off', 400]] as const) {
    const x = await mode(rule, m);
    assert.equal(x.statusCode, status, x.body);
  }
  const pol = (await app.inject({ method: 'GET', url: `/v1/policy?${q()}` })).json();
  assert.deepEqual(pol.rules.map((x: { name: string; mode: string }) => [x.name, x.mode]), [['default', 'enforce'], ['udp7000', 'enforce']]);
  assert.ok(pol.version > 1 && Date.parse(pol.changed_at) > Date.now() - 30_000, `version ${pol.version} changed at ${pol.changed_at}`);
});

test('confirm and rollback of a pending apply through the API, when nothing is pending, say so and change nothing', async () => {
  const v = (await app.inject({ method: 'GET', url: `/v1/policy?${q()}` })).json().version;
  for (const [url, key] of [['/v1/policy/confirm', 'confirmed'], ['/v1/policy/rollback', 'rolled_back']] as const) {
    const r = await app.inject({ method: 'POST', url, payload: { iface: place.iface, netns: place.netns } });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.json()[key], false);
  }
  assert.equal((await app.inject({ method: 'GET', url: `/v1/policy?${q()}` })).json().version, v);
});
