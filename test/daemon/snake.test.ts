/**
 * The API's JSON is snake_case, both ways (issue 12, step 7f): every answer of every route, the
 * errors included, walked key by key at every depth; a body with a camelCase key is refused with a
 * 422 that names the snake_case spelling (never ignored); and the console, the API's one consumer
 * in this repository, reads only keys the API answers with.
 *
 * Over a daemon in this process (handlers through inject()) on a veth in namespaces this test
 * creates, with a second configured interface that cannot be protected (so that the answers carry
 * their error and reason objects too), a named rule, live state, current rates, a failed and a
 * refused reload, and a pending rollback whose last attempt failed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance, InjectOptions } from 'fastify';
import pino from 'pino';
import * as server from '../../src/api/server';
import { CONSOLE_JS } from '../../src/api/console-script';
import type { Daemon } from '../../src/agent/daemon';
import { startDaemon } from '../../src/cli/daemon';
import { clearPending, writePending } from '../../src/agent/pending';
import { Protection } from '../../src/agent/protection';
import { loadSettings, type Place } from '../../src/agent/state';
import { REASON_NAMES } from '../../src/limiter/stats';
import { checkKeys, type DataMap } from '../lib/json-keys';
import { assertNoLeftovers, runId, Testbed, type Veth } from '../lib/netns';
import { udpSend } from '../lib/traffic';
import { sleep, writeConfig } from './helpers';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), `sluice-snake-${runId()}-`));
const configFile = join(dir, 'sluice.yaml');
const TOKEN = 'Zt8Kq3Wm6Rv1Xb4Nc7Hd0Lf2Pg5Js9Ya';
const log = pino({ level: 'silent' });
let veth: Veth;
let place: Place;
let other: Place;
let cli: string;
let daemon: Daemon;
const apps: FastifyInstance[] = [];

/** The interfaces of the config: the veth's server end, and (with broken) one that does not exist. */
function config(o: { broken?: boolean; rate?: number } = {}): Record<string, unknown> {
  return {
    interfaces: [
      { iface: place.iface, netns: place.netns, max_entries: 2048, limits: { algorithm: 'fixed', rate: o.rate ?? 100 }, lists: { deny: ['192.0.2.0/24'] }, policy: 'policy.yaml' },
      ...(o.broken ? [{ iface: 'nope0', netns: place.netns }] : []),
    ],
    api: { socket: null },
  };
}

/** What every answer's keys are checked against: only the counters by reason are a map of data. */
const DATA_MAPS: DataMap[] = [{ path: /(^|\.)reasons$/, isData: (k) => REASON_NAMES.includes(k), what: 'a reason name' }];

interface Answer { route: string; status: number; type: string; body: string }
const answers: Answer[] = [];

/** A request through one of the listeners; every answer is kept for the walk. */
async function call(app: FastifyInstance, o: InjectOptions & { url: string; method: string }): Promise<{ status: number; json: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await app.inject(o);
  answers.push({ route: `${o.method} ${o.url.split('?')[0]}`, status: r.statusCode, type: String(r.headers['content-type'] ?? ''), body: r.body });
  let json: unknown;
  try { json = r.json(); } catch { json = undefined; }
  return { status: r.statusCode, json };
}

const JSON_CT = { 'content-type': 'application/json' };

before(async () => {
  cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  place = { iface: veth.b.ifname, netns: srv };
  other = { iface: veth.a.ifname, netns: cli };
  writeFileSync(join(dir, 'policy.yaml'), 'rules:\n  - name: udp-9000\n    match: { proto: udp, dst_port: 9000 }\n    limit: { rate: 50/s }\n');
  writeConfig(configFile, config({ broken: true }));
  await tb.exec(cli, 'ping', ['-c', '1', '-W', '1', veth.b.ipv4]);
  // Protected, but not in the config: listed under `unmanaged`.
  (await Protection.up({ ...other, maxEntries: 1024 })).protection.close();
  daemon = await startDaemon({ configFile, listen: false, watch: false, logger: log });
});

after(async () => {
  for (const a of apps) await a.close();
  try { clearPending(place); } catch { /* none */ }
  await daemon?.stop({ detach: true });
  for (const p of [place, other]) {
    try { await Protection.down(p); } catch { /* already down */ }
  }
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers(runId(), { waitMs: 2000 });
});

/** Every route a listener serves, as "METHOD /path" (HEAD is fastify's own twin of GET). */
async function routesOf(app: FastifyInstance): Promise<string[]> {
  await app.ready();
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([\s│]*)[├└]── (\S+) \(([A-Z, ]+)\)/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    const parent = stack[depth - 1] ?? '';
    const path = (parent && !parent.endsWith('/') ? `${parent}/${m[2]}` : `${parent}${m[2]}`).replace(/\/\/+/g, '/');
    stack[depth] = path;
    for (const method of m[3]!.split(', ')) if (method !== 'HEAD') out.push(`${method} ${path}`);
  }
  return out.sort();
}

test('every answer of every route, errors included, has snake_case keys at every depth', async (t) => {
  const app = daemon.api();
  const authed = daemon.api(TOKEN);
  const hosts = server.buildApi(daemon, { logger: log, listener: 'tcp', allowedHosts: [{ host: 'localhost', port: null }] });
  const ro = server.buildReadOnly(daemon, { logger: log });
  apps.push(app, authed, hosts, ro);
  const q = `iface=${place.iface}&netns=${place.netns}`;

  // State to show: drops of the default rule and of the named one, and two snapshots for rates.
  await udpSend(tb, cli, veth.b.ipv4, 400, 0, 9000);
  await udpSend(tb, cli, veth.b.ipv4, 400, 0, 9001);
  daemon.sample();
  await sleep(600);

  // With the interface that cannot be protected: its error, its reason, a 503.
  await call(app, { method: 'GET', url: '/v1/status' });
  await call(ro, { method: 'GET', url: '/healthz' });
  await call(app, { method: 'GET', url: `/v1/stats?iface=nope0&netns=${place.netns}` });
  assert.equal((await call(app, { method: 'POST', url: '/v1/reload', headers: JSON_CT })).status, 500, 'a valid file that cannot be applied everywhere');

  const put = await call(app, { method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, netns: place.netns, limits: { rate: '30/min', bytes_rate: '2MB', burst: 5, key: { v4: 24 } } } });
  assert.equal(put.status, 200, JSON.stringify(put.json));
  await call(app, { method: 'GET', url: '/v1/stats' });
  await call(app, { method: 'GET', url: `/v1/stats?${q}` });
  const top = await call(app, { method: 'GET', url: `/v1/top?${q}&n=5` });
  assert.ok(top.json.top.length >= 1, 'the top has entries to walk');
  // The console's routes: the history, the policy, the lists, a rule's mode, confirm and rollback.
  daemon.sample();
  const hist = await call(app, { method: 'GET', url: `/v1/history?${q}` });
  assert.ok(hist.json.t.length >= 1 && Object.keys(hist.json.reasons).length, 'the history has points to walk');
  const place2 = { iface: place.iface, netns: place.netns };
  assert.equal((await call(app, { method: 'POST', url: '/v1/lists', payload: { ...place2, list: 'deny', op: 'add', prefix: '198.51.100.7', for: '1m' } })).status, 200);
  assert.equal((await call(app, { method: 'POST', url: '/v1/rules/mode', payload: { ...place2, rule: 'udp-9000', mode: 'dry-run' } })).status, 200);
  const pol = await call(app, { method: 'GET', url: `/v1/policy?${q}` });
  assert.ok(pol.json.lists.deny.some((e: { until: string | null }) => e.until) && pol.json.rules.some((r: { dry_run_from: string | null }) => r.dry_run_from === 'api'), 'the policy shows the API\'s changes');
  assert.equal((await call(app, { method: 'POST', url: '/v1/rules/mode', payload: { ...place2, rule: 'udp-9000', mode: 'enforce' } })).status, 200);
  assert.equal((await call(app, { method: 'POST', url: '/v1/lists', payload: { ...place2, list: 'deny', op: 'del', prefix: '198.51.100.7' } })).status, 200);
  assert.equal((await call(app, { method: 'POST', url: '/v1/policy/confirm', payload: place2 })).status, 200);
  assert.equal((await call(app, { method: 'POST', url: '/v1/policy/rollback', payload: place2 })).status, 200);

  // A pending rollback whose last attempt failed: status carries its summary.
  writePending(place, {
    id: `snake-${runId()}`, deadline: Date.now() + 3_600_000, previous: loadSettings(place)!, applied: join(dir, 'policy.yaml'), createdAt: new Date().toISOString(),
    holder: { kind: 'agent', pid: 0x3fffff }, failed: { at: new Date().toISOString(), attempts: 1, code: 'SLUICE_E_BPF', message: 'a failure for the test' },
  });
  const pending = await call(app, { method: 'GET', url: '/v1/status' });
  assert.ok(pending.json.interfaces.some((i: { rollback: unknown }) => i.rollback), 'the status shows the pending rollback');
  clearPending(place);

  // Reloads: refused (every problem, with its line), then applied.
  writeConfig(configFile, `interfaces:\n  - iface: ${place.iface}\n    netns: ${place.netns}\n    limits: { rate: 0 }\nlog: { level: loud }\n`);
  assert.equal((await call(app, { method: 'POST', url: '/v1/reload', headers: JSON_CT })).status, 422);
  await call(app, { method: 'GET', url: '/v1/status' });
  writeConfig(configFile, config());
  assert.equal((await call(app, { method: 'POST', url: '/v1/reload', headers: JSON_CT, payload: '{}' })).status, 200);
  const st = await call(app, { method: 'GET', url: '/v1/status' });
  assert.ok(st.json.unmanaged.some((u: Place) => u.iface === other.iface && u.netns === other.netns), 'the interface outside the config');
  assert.equal((await call(ro, { method: 'GET', url: '/healthz' })).status, 200);

  // Errors of every kind.
  const errors: [FastifyInstance, InjectOptions & { url: string; method: string }, number][] = [
    [app, { method: 'GET', url: '/v1/stats?iface=a/b&x=1' }, 400],
    // Its answer is a stream of server-sent events (test/e2e/events.test.ts reads them); its errors are JSON.
    [app, { method: 'GET', url: `/v1/events?iface=${place.iface}&reason=nope` }, 400],
    [app, { method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, limits: { rate: -1, extra: 1 } } }, 400],
    [app, { method: 'PUT', url: '/v1/limits', payload: { iface: 'eth9', limits: {} } }, 404],
    [app, { method: 'PUT', url: '/v1/limits', payload: 'rate=1', headers: { 'content-type': 'text/plain' } }, 415],
    [app, { method: 'GET', url: '/v2/nothing' }, 404],
    [authed, { method: 'GET', url: '/v1/status' }, 401],
    [hosts, { method: 'GET', url: '/v1/status', headers: { host: 'evil.example' } }, 403],
    [app, { method: 'GET', url: '/v1/status', headers: { origin: 'https://evil.example' } }, 403],
    [ro, { method: 'POST', url: '/v1/reload' }, 404],
  ];
  for (const [a, o, status] of errors) assert.equal((await call(a, o)).status, status, `${o.method} ${o.url}`);

  // Every route was answered, and each answer that is not JSON says what it is instead.
  const served = [...(await routesOf(app)).map((r) => `api ${r}`), ...(await routesOf(ro)).map((r) => `ro ${r}`)];
  const notJson: Record<string, RegExp> = {
    'GET /': /^text\/html/, 'GET /metrics': /^text\/plain; version=0\.0\.4/,
    'GET /assets/console.js': /^text\/javascript/, 'GET /assets/uplot.min.js': /^text\/javascript/,
    'GET /assets/console.css': /^text\/css/, 'GET /assets/uplot.min.css': /^text\/css/,
  };
  for (const r of served) {
    const route = r.replace(/^(api|ro) /, '');
    if (notJson[route]) {
      const a = await call(r.startsWith('ro') ? ro : app, { method: 'GET', url: route.split(' ')[1]! });
      assert.equal(a.status, 200, r);
      assert.match(answers.at(-1)!.type, notJson[route]!, `${r} is not JSON`);
      continue;
    }
    assert.ok(answers.some((a) => a.route === route && /^application\/json/.test(a.type)), `${r} was answered with JSON here`);
  }

  // The walk.
  const report = { bad: [] as string[], keys: 0, dataMaps: new Map<string, number>() };
  for (const a of answers.filter((x) => /^application\/json/.test(x.type))) {
    const before = report.bad.length;
    checkKeys(JSON.parse(a.body), DATA_MAPS, report);
    for (let i = before; i < report.bad.length; i++) report.bad[i] = `${a.route} (${a.status}): ${report.bad[i]}`;
  }
  t.diagnostic(`${answers.length} answers of ${served.length} routes, ${report.keys} keys; data maps met: ${[...report.dataMaps].map(([p, n]) => `${p} (${n})`).join(', ')}`);
  assert.deepEqual([...new Set(report.bad)], [], 'every key snake_case');
  assert.ok(report.keys > 300, `${report.keys} keys walked`);
  assert.ok([...report.dataMaps.keys()].some((p) => p.startsWith('rules[].')), `the per-rule reasons were met as data: ${[...report.dataMaps.keys()].join(', ')}`);
  for (const k of ['rate_period_ms', 'bytes_rate', 'key_v4', 'window_ms', 'idle_ms', 'last_reload', 'rollback_at', 'limits_from', 'allowed_pps', 'problems', 'reason']) {
    assert.ok(answers.some((a) => a.body.includes(`"${k}":`)), `an answer carries ${k}`);
  }
});

test('a camelCase key in a body is refused with 422, naming its snake_case spelling, and changes nothing', async () => {
  const app = daemon.api();
  apps.push(app);
  const before = (await app.inject({ method: 'GET', url: '/v1/status' })).json().interfaces[0].limits;
  const r = await app.inject({
    method: 'PUT', url: '/v1/limits',
    payload: { iface: place.iface, netns: place.netns, limits: { rate: '2k', bytesRate: '1MB', bytesBurst: 1000, windowMs: 500, keyV4: 24, burst: -1 } },
  });
  assert.equal(r.statusCode, 422, r.body);
  const e = r.json().error as { code: string; message: string; problems: { path: string; message: string }[] };
  assert.equal(e.code, 'SLUICE_E_API_BAD_REQUEST');
  const by = new Map(e.problems.map((p) => [p.path, p.message]));
  assert.match(by.get('limits.bytesRate') ?? '', /snake_case: bytesRate is bytes_rate/);
  assert.match(by.get('limits.bytesBurst') ?? '', /bytes_burst/);
  assert.match(by.get('limits.windowMs') ?? '', /window_ms, which this body takes as "window" with its unit/);
  assert.match(by.get('limits.keyV4') ?? '', /key_v4, which this body takes as "key": \{ "v4": N \}/);
  assert.match(by.get('limits.burst') ?? '', /at least 0/, 'every other problem of the body too');
  assert.equal(e.problems.length, 5, JSON.stringify(e.problems));
  assert.match(e.message, /limits\.bytesRate: keys are snake_case/);
  // Nothing was applied: not the rate given beside them, not the camelCase keys.
  assert.deepEqual((await app.inject({ method: 'GET', url: '/v1/status' })).json().interfaces[0].limits, before);
  // The same key in snake_case is taken.
  const ok = await app.inject({ method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, netns: place.netns, limits: { bytes_rate: '1MB' } } });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json().limits.bytes_rate, 1_000_000);
  // A key of the answers that a body writes otherwise gets the same hint.
  const back = await app.inject({ method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, netns: place.netns, limits: { window_ms: 500 } } });
  assert.equal(back.statusCode, 400, back.body);
  assert.match(back.json().error.problems[0].message, /unknown key: write "window" with its unit/);
});

test('a rate given without a period is per second, whatever the period of the rate it replaces', async () => {
  const app = daemon.api();
  apps.push(app);
  const put = async (limits: Record<string, unknown>) => {
    const r = await app.inject({ method: 'PUT', url: '/v1/limits', payload: { iface: place.iface, netns: place.netns, limits } });
    assert.equal(r.statusCode, 200, r.body);
    return r.json().limits as Record<string, unknown>;
  };
  const perMinute = await put({ rate: '30/min', bytes_rate: '500MB/h' });
  assert.deepEqual([perMinute['rate'], perMinute['rate_period_ms'], perMinute['bytes_period_ms']], [30, 60_000, 3_600_000]);
  const burst = await put({ burst: 3 });
  assert.equal(burst['rate_period_ms'], 60_000, 'a change of the burst alone keeps the period');
  const perSecond = await put({ rate: '1k', bytes_rate: '1MB' });
  assert.deepEqual([perSecond['rate'], perSecond['rate_period_ms'], perSecond['bytes_rate'], perSecond['bytes_period_ms']], [1000, 1000, 1_000_000, 1000], 'not 1000 a minute');
  const live = (await app.inject({ method: 'GET', url: '/v1/status' })).json().interfaces[0].limits;
  assert.equal(live.rate_period_ms, 1000, 'what runs, as the status reads it back from the settings');
});

test('every key the console reads of an answer is a key the API answers with', async () => {
  const app = daemon.api();
  apps.push(app);
  const q = `iface=${place.iface}&netns=${place.netns}`;
  await udpSend(tb, cli, veth.b.ipv4, 50);
  daemon.sample();
  await sleep(1100);
  daemon.sample();
  const keys = new Set<string>();
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) { keys.add(k); walk(x); }
  };
  for (const url of ['/v1/status', `/v1/stats?${q}`, `/v1/history?${q}`, `/v1/top?${q}&n=5`, `/v1/policy?${q}`]) {
    const r = await app.inject({ method: 'GET', url });
    assert.equal(r.statusCode, 200, `${url}: ${r.body}`);
    walk(r.json());
  }
  // An event as GET /v1/events streams it, and the budget line.
  ['time', 'source', 'rule', 'reason', 'verdict', 'proto', 'dport', 'bytes', 'suppressed', 'lost'].forEach((k) => keys.add(k));
  // The answers of the switches (POST /v1/policy/confirm, /v1/policy/rollback) and a pending summary (walked in the test above).
  ['confirmed', 'rolled_back', 'rollback_at'].forEach((k) => keys.add(k));
  // Members the script reads that are snake_case (the API's keys): each must be one.
  const read = new Set([...CONSOLE_JS.matchAll(/\.([a-z]+(?:_[a-z0-9]+)+)\b/g)].map((m) => m[1]!));
  assert.ok(read.size >= 20, [...read].join(', '));
  const missing = [...read].filter((k) => !keys.has(k));
  assert.deepEqual(missing, [], `the console reads keys no answer has: ${missing.join(', ')}`);
});
