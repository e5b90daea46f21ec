/**
 * One validator of names for every way in (issue 11, steps 1 and 5), without the kernel: the
 * validator itself, the config file, the HTTP API (inject, over a backend that records what reaches
 * it), the path assertion of the pin and settings paths, and a config that would unprotect
 * everything (`interfaces:` with nothing under it, or missing), refused by `sluice run` at start.
 */
import { PIN_ROOT, removePrivateRoots, STATE_DIR } from '../lib/private-root';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import { ifaceNameProblem, netnsNameProblem } from '../../src/limiter/names';
import { nameOfPath, pathName, pinDir, settingsPath, under } from '../../src/agent/state';
import { buildApi, type ApiBackend, type PlaceQuery } from '../../src/api/server';
import { ConfigError, limitsSchema, parseConfig, type LimitsInput } from '../../src/config';
import { SLUICE } from '../daemon/helpers';

after(() => removePrivateRoots());

const BAD_IFACES = ['', '.', '..', '../x', 'a/b', '/', 'x'.repeat(16), 'a:b', 'a b', 'a\tb', 'a\nb', 'a\0b', 'é'.repeat(8)];
const GOOD_IFACES = ['eth0', 'x'.repeat(15), 'veth-1.100', '...', '.x', 'é'.repeat(7), 'a@b'];
const BAD_NETNS = ['', '.', '..', '../x', 'a/b', 'a\0b', 'host', 'x'.repeat(256)];
// The lab's names are 23 bytes; Kubernetes CNI names about 40.
const GOOD_NETNS = ['lab', 'sluice-lab-abc123-srv-x', 'cni-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901', 'x'.repeat(255), 'a b', '...'];

test('the validator: interface names as the kernel takes them, namespace names as file names', () => {
  for (const n of BAD_IFACES) assert.ok(ifaceNameProblem(n), `interface ${JSON.stringify(n)} accepted`);
  for (const n of GOOD_IFACES) assert.equal(ifaceNameProblem(n), undefined, `interface ${JSON.stringify(n)} refused`);
  for (const n of BAD_NETNS) assert.ok(netnsNameProblem(n), `netns ${JSON.stringify(n.slice(0, 20))} accepted`);
  for (const n of GOOD_NETNS) assert.equal(netnsNameProblem(n), undefined, `netns ${JSON.stringify(n.slice(0, 20))} refused`);
  assert.match(ifaceNameProblem('')!, /empty \(an unset variable\?\)/);
  assert.match(ifaceNameProblem('x'.repeat(16))!, /16 bytes, the kernel allows at most 15/);
});

test('pin and settings paths stay under their roots: a name that would climb out stops the command', () => {
  assert.equal(pinDir({ iface: 'eth0', netns: null }), join(PIN_ROOT, 'host', 'eth0'));
  assert.equal(pinDir({ iface: 'eth0', netns: 'lab' }), join(PIN_ROOT, 'lab', 'eth0'));
  assert.equal(settingsPath({ iface: 'eth0', netns: 'lab' }), join(STATE_DIR, 'lab', 'eth0.json'));
  for (const p of [{ iface: '..', netns: 'lab' }, { iface: '', netns: 'lab' }, { iface: 'eth0', netns: '..' }, { iface: '..', netns: '..' }, { iface: 'a/b', netns: null }, { iface: 'eth0', netns: '' }]) {
    for (const f of [pinDir, settingsPath]) {
      assert.throws(() => f(p), (e: { code?: string; message: string }) => e.code === 'SLUICE_E_INVALID_ARGUMENT' && /Nothing was changed/.test(e.message), `${f.name}(${JSON.stringify(p)})`);
    }
  }
  // bpffs refuses "." in names: a VLAN interface (eth0.100) and a namespace "ns.1" get a path all the same.
  assert.equal(pinDir({ iface: 'eth0.100', netns: 'ns.1' }), join(PIN_ROOT, 'ns%2E1', 'eth0%2E100'));
  assert.equal(settingsPath({ iface: 'a%b.c', netns: null }), join(STATE_DIR, 'host', 'a%25b%2Ec.json'));
  for (const n of ['eth0.100', '...', 'a%2Eb', '%', 'plain']) assert.equal(nameOfPath(pathName(n)), n);
  // The second lock, on its own: whatever the names, the path is exactly its levels under the root.
  for (const parts of [['..'], ['a', '..'], ['a', '../..'], ['.'], ['a', ''], ['/etc']]) {
    assert.throws(() => under('/r/o/o/t', ...parts), /refusing the path/, JSON.stringify(parts));
  }
  assert.equal(under('/r', 'a', 'b'), '/r/a/b');
});

function configProblems(text: string): { path: string; message: string }[] {
  try {
    parseConfig(text, join(STATE_DIR, 'sluice.yaml'));
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.problems;
  }
  assert.fail(`accepted:\n${text}`);
}

test('the config refuses names that are not names, with the validator\'s messages; accepts long namespace names', () => {
  const bad = configProblems(`interfaces:
  - { iface: "..", netns: lab }
  - { iface: eth0, netns: ".." }
  - { iface: "", netns: lab }
  - { iface: "a/b" }
  - { iface: eth1, netns: "../x" }
`);
  assert.deepEqual(bad.map((p) => p.path), ['interfaces[0].iface', 'interfaces[1].netns', 'interfaces[2].iface', 'interfaces[3].iface', 'interfaces[4].netns']);
  assert.match(bad[0]!.message, /"\.\." is not an interface name/);
  assert.match(bad[1]!.message, /"\.\." is not a network namespace name/);
  assert.match(bad[2]!.message, /empty/);
  const c = parseConfig(`interfaces:\n  - { iface: eth0, netns: ${GOOD_NETNS[2]} }\n`, join(STATE_DIR, 'ok.yaml'));
  assert.equal(c.interfaces[0]!.netns, GOOD_NETNS[2]);
});

test('a config that would unprotect everything is refused: `interfaces:` with nothing under it, or no interfaces key', () => {
  let ps = configProblems('interfaces:\n');
  assert.equal(ps.length, 1);
  assert.equal(ps[0]!.path, 'interfaces');
  assert.match(ps[0]!.message, /has nothing under it .*write `interfaces: \[\]` to protect none/);
  ps = configProblems('interfaces: ~\nlog: { level: info }\n');
  assert.match(ps[0]!.message, /has nothing under it/);
  ps = configProblems('log: { level: info }\nreconcile_interval: 5s\n');
  assert.equal(ps[0]!.path, 'interfaces');
  assert.match(ps[0]!.message, /required: .*`interfaces: \[\]`/);
  assert.match(configProblems('\n# just a comment\n')[0]!.message, /the file is empty/);
  assert.equal(parseConfig('interfaces: []\n', join(STATE_DIR, 'none.yaml')).interfaces.length, 0, 'the explicit way to say none');
});

test('sluice run refuses such a file at start (exit 2) before it touches anything', async () => {
  const file = join(STATE_DIR, 'truncated.yaml');
  writeFileSync(file, `api: { socket: ${join(STATE_DIR, 'api.sock')} }\ninterfaces:\n`);
  const r = await new Promise<{ code: number; stderr: string; stdout: string }>((res) => {
    execFile(process.execPath, [SLUICE, 'run', '--config', file], { timeout: 30_000 }, (err, stdout, stderr) => res({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }));
  });
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /interfaces: `interfaces:` has nothing under it/);
});

test('the API refuses such names (400, every problem listed) before they reach the daemon', async () => {
  const seen: PlaceQuery[] = [];
  const backend: ApiBackend<LimitsInput> = {
    limitsSchema,
    status: async () => ({}),
    stats: async (p) => { if (p) seen.push(p); return {}; },
    top: async (p) => { seen.push(p); return {}; },
    setLimits: async (p) => { seen.push(p); return { iface: p.iface, netns: p.netns, limits: {} } as never; },
    reload: async () => ({}),
    metrics: async () => ({ contentType: 'text/plain', body: '' }),
    subscribeEvents: (p) => { seen.push(p); return { budget: () => undefined, unsubscribe: () => undefined }; },
    history: async (p) => { seen.push(p); return {}; },
    policy: async (p) => { seen.push(p); return {}; },
    editList: async (p) => { seen.push(p); return {}; },
    setRuleMode: async (p) => { seen.push(p); return {}; },
    confirmPending: async (p) => { seen.push(p); return {}; },
    rollbackPending: async (p) => { seen.push(p); return {}; },
  };
  const app = buildApi(backend, { logger: pino({ level: 'silent' }) });
  try {
    for (const url of ['/v1/top?iface=..', '/v1/top?iface=', '/v1/top?iface=eth0&netns=..', '/v1/stats?iface=a%2Fb', '/v1/stats?iface=eth0&netns=', `/v1/top?iface=${'x'.repeat(16)}`, '/v1/events?iface=..', '/v1/events?iface=eth0&netns=..', '/v1/history?iface=..', '/v1/policy?iface=eth0&netns=..']) {
      const r = await app.inject({ method: 'GET', url });
      assert.equal(r.statusCode, 400, `${url}: ${r.body}`);
      const body = r.json() as { error: { code: string; problems: { path: string; message: string }[] } };
      assert.equal(body.error.code, 'SLUICE_E_API_BAD_REQUEST');
      assert.ok(body.error.problems.some((p) => /not an interface name|not a network namespace name|empty|bytes/.test(p.message)), `${url}: ${r.body}`);
    }
    const r = await app.inject({ method: 'PUT', url: '/v1/limits', payload: { iface: '..', netns: '..', limits: { rate: 5 } } });
    assert.equal(r.statusCode, 400);
    assert.deepEqual((r.json() as { error: { problems: { path: string }[] } }).error.problems.map((p) => p.path).sort(), ['iface', 'netns']);
    for (const [url, payload] of [['/v1/lists', { iface: '..', list: 'deny', op: 'add', prefix: '192.0.2.1' }], ['/v1/rules/mode', { iface: 'a/b', rule: 'x', mode: 'dry-run' }], ['/v1/policy/confirm', { iface: '' }], ['/v1/policy/rollback', { iface: 'eth0', netns: '..' }]] as const) {
      const w = await app.inject({ method: 'POST', url, payload });
      assert.equal(w.statusCode, 400, `${url}: ${w.body}`);
    }
    assert.deepEqual(seen, [], 'nothing reached the backend');
    // A CNI-length namespace name is a name.
    const ok = await app.inject({ method: 'GET', url: `/v1/top?iface=eth0&netns=${GOOD_NETNS[2]}` });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.deepEqual(seen, [{ iface: 'eth0', netns: GOOD_NETNS[2] }]);
  } finally {
    await app.close();
  }
});
