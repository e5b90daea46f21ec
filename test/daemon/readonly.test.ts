/**
 * Issue 15, step 1: the read-only listener (config `metrics.listen`) of a daemon running in this
 * process on a veth in a namespace this test creates, served on 127.0.0.1: /metrics parses as
 * Prometheus text, /healthz says whether every configured interface is protected (503 while one
 * is not, 200 again once the daemon re-attached it), every write route and /v1/* is a 404 whatever
 * the method or body, and Host/Origin are checked as on the API's TCP listener.
 */
import { removePrivateRoots, STATE_DIR } from '../lib/private-root';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import parsePrometheus from 'parse-prometheus-text-format';
import pino from 'pino';
import type { Daemon } from '../../src/agent/daemon';
import { startDaemon } from '../../src/cli/daemon';
import { Protection } from '../../src/agent/protection';
import type { Place } from '../../src/agent/state';
import { ApiCode } from '../../src/api/errors';
import { ConfigError, parseConfig } from '../../src/config';
import { assertNoLeftovers, Testbed } from '../lib/netns';
import { freePort, http, writeConfig } from './helpers';

const tb = new Testbed();
const configFile = join(STATE_DIR, 'sluice.yaml');
let place: Place;
let daemon: Daemon;
let port: number;
const ro = (): { host: string; port: number } => ({ host: '127.0.0.1', port });

before(async () => {
  const cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  const v = await tb.addVeth(cli, srv);
  place = { iface: v.b.ifname, netns: srv };
  port = await freePort();
  writeConfig(configFile, {
    interfaces: [{ iface: place.iface, netns: place.netns, max_entries: 1024, limits: { rate: 100 } }],
    api: { socket: null },
    metrics: { listen: `127.0.0.1:${port}` },
    reconcile_interval: '1h', // the test re-attaches by a reload, so that the 503 is not raced
  });
  daemon = await startDaemon({ configFile, watch: false, logger: pino({ level: 'silent' }) });
});

after(async () => {
  try {
    await daemon?.stop({ detach: false });
    if (place) await Protection.down(place).catch(() => undefined);
    await tb.cleanup();
  } finally {
    removePrivateRoots();
  }
  await assertNoLeftovers();
});

test('the config: metrics is off by default, HOST:PORT checked, unknown keys refused', () => {
  assert.equal(parseConfig('interfaces: []\n', '/x.yaml').metrics, null);
  const on = parseConfig('interfaces: []\nmetrics: { listen: "[::1]:9181" }\n', '/x.yaml').metrics;
  assert.equal(on?.host, '::1');
  assert.equal(on?.port, 9181);
  assert.ok(on?.allowedHosts.some((h) => h.host === 'localhost'), 'default allowed hosts as api.tcp');
  for (const [text, re] of [['metrics: { listen: nope }', /HOST:PORT/], ['metrics: { listen: "127.0.0.1:1", token_file: t }', /unknown key/], ['metrics: { listen: "127.0.0.1:1", allowed_hosts: [] }', /empty list/]] as const) {
    assert.throws(() => parseConfig(`interfaces: []\n${text}\n`, '/x.yaml'), (e: unknown) => e instanceof ConfigError && re.test(e.message), text);
  }
});

test('/metrics is Prometheus text, without a token; /healthz is 200 while the interface is protected', async () => {
  const m = await http(ro(), 'GET', '/metrics');
  assert.equal(m.status, 200);
  assert.match(String(m.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const families = parsePrometheus(m.text);
  const up = families.find((f) => f.name === 'sluice_up');
  assert.ok(up, 'sluice_up is there');
  assert.equal(up.metrics.find((x) => x.labels?.['iface'] === place.iface)?.value, '1');
  const h = await http(ro(), 'GET', '/healthz');
  assert.equal(h.status, 200, h.text);
  assert.deepEqual(h.json, { ok: true, interfaces: [{ iface: place.iface, netns: place.netns, protected: true }] });
});

test('/healthz is 503 once the protection is taken down behind the daemon, 200 after it re-attached', async () => {
  await Protection.down(place);
  const h = await http(ro(), 'GET', '/healthz');
  assert.equal(h.status, 503, h.text);
  assert.equal(h.json.ok, false);
  assert.equal(h.json.interfaces[0].protected, false);
  assert.match(h.json.interfaces[0].reason, /pinned link/);
  await daemon.reload('test'); // ensure() attaches afresh, as the reconcile timer would
  const again = await http(ro(), 'GET', '/healthz');
  assert.equal(again.status, 200, again.text);
});

test('no write route and no /v1 route: every other request is a 404, whatever its method or body', async () => {
  const json = { 'content-type': 'application/json' };
  const cases: [string, string, Record<string, string>?, string?][] = [
    ['PUT', '/v1/limits', json, JSON.stringify({ iface: 'x', limits: { rate: 1 } })],
    ['POST', '/v1/reload', json, ''],
    ['POST', '/v1/reload', { 'content-type': 'application/x-www-form-urlencoded' }, 'a=1'],
    ['GET', '/v1/status'], ['GET', '/v1/stats'], ['GET', '/v1/top?iface=x'], ['GET', '/'],
    ['POST', '/metrics', json, '{}'], ['PUT', '/healthz', json, '{}'], ['DELETE', '/metrics'], ['PATCH', '/healthz', { 'content-type': 'text/plain' }, 'x'],
  ];
  for (const [method, path, headers, body] of cases) {
    const r = await http(ro(), method, path, { headers, ...(body !== undefined ? { body } : {}) });
    assert.equal(r.status, 404, `${method} ${path}: ${r.text}`);
    assert.equal(r.json.error.code, ApiCode.NotFound);
  }
});

test('Host and Origin as on the API: a rebound Host, a cross-site Origin or Sec-Fetch-Site are refused', async () => {
  const refused: [Record<string, string>, string][] = [
    [{ host: 'evil.example' }, ApiCode.HostNotAllowed],
    [{ host: `evil.example:${port}` }, ApiCode.HostNotAllowed],
    [{ origin: 'http://evil.example' }, ApiCode.CrossSite],
    [{ origin: 'null' }, ApiCode.CrossSite],
    [{ 'sec-fetch-site': 'cross-site' }, ApiCode.CrossSite],
    [{ 'sec-fetch-site': 'same-site' }, ApiCode.CrossSite],
  ];
  for (const path of ['/metrics', '/healthz']) {
    for (const [headers, code] of refused) {
      const r = await http(ro(), 'GET', path, { headers });
      assert.equal(r.status, 403, `${path} ${JSON.stringify(headers)}`);
      assert.equal(r.json.error.code, code);
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, '[::1]']) {
      assert.equal((await http(ro(), 'GET', path, { headers: { host } })).status, 200, `${path} Host ${host}`);
    }
    assert.equal((await http(ro(), 'GET', path, { headers: { origin: `http://127.0.0.1:${port}` } })).status, 200, `${path} same origin`);
  }
});
