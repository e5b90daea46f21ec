/**
 * The daemon's config file without the kernel: defaults, units, and one error that lists every
 * problem of a file (path, line, what is expected).
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ConfigError, loadConfig, parseConfig } from '../../src/config';

const dir = mkdtempSync(join(tmpdir(), 'sluice-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function problemsOf(text: string): ConfigError {
  try {
    parseConfig(text, join(dir, 'sluice.yaml'));
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    assert.equal(e.code, 'SLUICE_E_CONFIG');
    return e;
  }
  assert.fail('the config was accepted');
}

test('a minimal file gets every default, with units parsed, and is frozen', () => {
  const c = parseConfig(`
interfaces:
  - iface: eth1
    netns: lab
    limits: { algorithm: token, rate: 10k, burst: 50, bytes_rate: 2MB, bytes_burst: 64KB, key: { v4: 24 } }
    lists: { mgmt: [192.0.2.10], deny: ["2001:db8:bad::1/48"] }
    malformed: drop
`, join(dir, 'a.yaml'));
  assert.equal(c.interfaces.length, 1);
  const i = c.interfaces[0]!;
  assert.deepEqual({ iface: i.iface, netns: i.netns, mode: i.mode, maxEntries: i.maxEntries, maxRules: i.maxRules, malformedDrop: i.malformedDrop },
    { iface: 'eth1', netns: 'lab', mode: 'auto', maxEntries: 100_000, maxRules: 1024, malformedDrop: true });
  assert.deepEqual(i.limits, { algorithm: 'token', rate: 10_000, burst: 50, bytesRate: 2_000_000, bytesBurst: 64_000, windowMs: 1000, keyV4: 24, keyV6: 64 });
  assert.deepEqual(i.lists, { mgmt: ['192.0.2.10/32'], deny: ['2001:db8:bad::/48'], allow: [] });
  assert.deepEqual(c.api, { socket: '/run/sluice/api.sock', tcp: null });
  assert.equal(c.log.level, 'info');
  assert.equal(c.reconcileIntervalMs, 10_000);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.interfaces[0]) && Object.isFrozen(c.interfaces[0]!.limits));
});

test('rate none with a byte rate limits bytes only; interfaces: [] is valid, an empty file is not', () => {
  const c = parseConfig('interfaces:\n  - { iface: eth1, limits: { rate: none, bytes_rate: 1MB } }\n', join(dir, 'b.yaml'));
  assert.equal(c.interfaces[0]!.limits.rate, null);
  assert.equal(c.interfaces[0]!.limits.bytesRate, 1_000_000);
  assert.equal(parseConfig('interfaces: []\n', join(dir, 'c.yaml')).interfaces.length, 0);
  assert.match(problemsOf('# nothing\n').message, /the file is empty/);
});

test('an invalid file gives one error listing every problem, with path and line', () => {
  const e = problemsOf(`interfaces:
  - iface: eth1
    mode: turbo
    max_entires: 5
    limits:
      rate: 0
      burst: -3
      bytes_rate: lots
      window: 2h
      key: { v4: 40 }
    lists:
      deny: ["10.0.0.300/8", 7]
  - iface: eth1
  - netns: host
  - iface: eth2
    limits: { rate: 1e15 }
  - iface: eth3
    limits: { rate: none }
api:
  tcp: { listen: localhost }
log: { level: loud }
extra: 1
`);
  const byPath = new Map(e.problems.map((p) => [p.path, p]));
  const expect: [string, number, RegExp][] = [
    ['interfaces[0].mode', 3, /expected one of auto, native, generic, got "turbo"/],
    ['interfaces[0].max_entires', 4, /unknown key \(did you mean max_entries\?\)/],
    ['interfaces[0].limits.rate', 6, /rate "0" must be at least 1/],
    ['interfaces[0].limits.burst', 7, /must be at least 0/],
    ['interfaces[0].limits.bytes_rate', 8, /"lots" is not a byte count/],
    ['interfaces[0].limits.window', 9, /too large/],
    ['interfaces[0].limits.key.v4', 10, /at most 32/],
    ['interfaces[0].lists.deny[0]', 12, /"10.0.0.300\/8" is not an IPv4 or IPv6 address/],
    ['interfaces[0].lists.deny[1]', 12, /expected an address or prefix/],
    ['interfaces[1]', 13, /eth1 is already configured in interfaces\[0\]/],
    ['interfaces[2].iface', 14, /required/],
    ['interfaces[2].netns', 14, /"host" cannot be told apart/],
    ['interfaces[3].limits.rate', 16, /too large/],
    ['interfaces[4].limits.rate', 18, /needs a byte limit/],
    ['api.tcp.listen', 20, /expected HOST:PORT/],
    ['api.tcp.token_file', 20, /required: the TCP API is served only with a bearer token/],
    ['log.level', 21, /expected one of fatal, error, warn, info, debug, trace, silent/],
    ['extra', 22, /unknown key; expected one of interfaces, api, metrics, log, reconcile_interval/],
  ];
  for (const [path, line, re] of expect) {
    const p = byPath.get(path);
    assert.ok(p, `no problem reported at ${path}; got:\n${e.message}`);
    assert.equal(p.line, line, `line of ${path}`);
    assert.match(p.message, re, `message at ${path}`);
  }
  assert.equal(e.problems.length, expect.length, e.message);
  // The message is the list, each line with file:line: path: what.
  assert.match(e.message, new RegExp(`^invalid config .*sluice\\.yaml: ${expect.length} problems\\n`));
  assert.match(e.message, /sluice\.yaml:6: interfaces\[0\]\.limits\.rate: rate "0" must be at least 1/);
});

test('invalid rates are each a clear problem: zero, negative, not a number, an unknown period, a fraction, absurdly large, wrong type', () => {
  const cases: [string, RegExp][] = [
    ['0', /must be at least 1/],
    ['-5', /rate "-5" must be at least 1/],
    ['fast', /is not a rate \(e\.g\. 1000, 10k, 1000\/s, 30\/min, 100\/h\)/],
    ['"2T"', /is not a rate/],
    ['"3/day"', /"\/day" is not a period \(use \/s, \/min or \/h\)/],
    ['"0.5/s"', /not a whole number of units per period \(write e\.g\. 30\/min/],
    ['99999999999999', /too large/],
    ['1.5', /not a whole number/],
    ['2.5m', /"m" is ambiguous in a number \(mega or minute\?\); write 2\.5M for 2\.5 million a second, or a rate per minute as N\/min/],
    ['[1]', /expected packets per second, minute or hour .* got a list/],
    ['true', /expected packets per second, minute or hour .* got true/],
  ];
  const text = `interfaces:\n${cases.map(([v], n) => `  - { iface: e${n}, limits: { rate: ${v} } }`).join('\n')}\n`;
  const e = problemsOf(text);
  assert.equal(e.problems.length, cases.length, e.message);
  cases.forEach(([, re], n) => {
    const p = e.problems.find((x) => x.path === `interfaces[${n}].limits.rate`);
    assert.ok(p, `interfaces[${n}]: ${e.message}`);
    assert.equal(p.line, n + 2);
    assert.match(p.message, re);
  });
});

test('YAML syntax errors are listed with their lines', () => {
  const e = problemsOf('interfaces:\n  - iface: [eth1\n    mode: x: y\n');
  assert.ok(e.problems.length >= 1);
  assert.ok(e.problems.every((p) => p.line !== undefined && p.message.startsWith('YAML: ')), e.message);
});

test('the TCP API needs a readable token of 16 characters or more', () => {
  const tokenFile = join(dir, 'token');
  const cfg = `interfaces: []\napi: { tcp: { listen: "127.0.0.1:9180", token_file: token } }\n`;
  const file = join(dir, 'tcp.yaml');
  writeFileSync(file, cfg);

  rmSync(tokenFile, { force: true });
  assert.throws(() => loadConfig(file), (e: ConfigError) => e.problems.length === 1 && e.problems[0]!.path === 'api.tcp.token_file' && /cannot read the token file .*ENOENT/.test(e.problems[0]!.message));
  writeFileSync(tokenFile, 'short\n', { mode: 0o600 });
  assert.throws(() => loadConfig(file), /has 5 characters; use at least 16/);
  writeFileSync(tokenFile, 'a'.repeat(40) + '\n', { mode: 0o600 });
  chmodSync(tokenFile, 0o600);
  const c = loadConfig(file);
  assert.deepEqual(c.api.tcp, {
    host: '127.0.0.1', port: 9180, tokenFile, token: 'a'.repeat(40), tls: null,
    allowedHosts: ['127.0.0.1', 'localhost', '::1'].map((host) => ({ host, port: null })),
  });
  assert.deepEqual(c.warnings, []);
  chmodSync(tokenFile, 0o644);
  assert.match(loadConfig(file).warnings[0]!, /can be read by users other than its owner/);
});

test('a missing file is one problem that says so', () => {
  assert.throws(() => loadConfig(join(dir, 'nope.yaml')), (e: ConfigError) => e.code === 'SLUICE_E_CONFIG' && /cannot read the file \(ENOENT\)/.test(e.message));
});

test('an interface\'s policy file is compiled with the config; its problems join the config\'s', () => {
  writeFileSync(join(dir, 'good-policy.yaml'), `
defaults: { algorithm: gcra, rate: 500 }
deny: [198.18.0.0/15]
rules:
  - name: dns
    match: { proto: udp, dst_port: 53 }
    limit: { rate: 20k, per: rule }
  - name: out
    match: { dir: egress }
    limit: { rate: 100 }
`);
  const c = parseConfig(`
interfaces:
  - iface: eth1
    policy: good-policy.yaml
    lists: { deny: [192.0.2.0/24] }
`, join(dir, 'p.yaml'));
  const i = c.interfaces[0]!;
  assert.equal(i.limits.algorithm, 'gcra');
  assert.equal(i.limits.rate, 500);
  assert.deepEqual(i.rules.map((r) => [r.name, r.id, r.key, r.keyBy]), [['dns', 1, 'rule', 'src'], ['out', 2, { v4: 32, v6: 64 }, 'dst']]);
  assert.deepEqual(i.lists.deny, ['198.18.0.0/15', '192.0.2.0/24'], 'lists of both');
  assert.equal(i.egress, true, 'an egress rule turns egress on');
  assert.equal(i.policyFile, join(dir, 'good-policy.yaml'));

  writeFileSync(join(dir, 'bad-policy.yaml'), 'rules:\n  - name: x\n    limit: { rate: 0 }\n');
  const e = problemsOf(`
interfaces:
  - iface: eth1
    policy: bad-policy.yaml
    limits: { rate: none }
`);
  assert.equal(e.problems.length, 2, e.message);
  assert.match(e.message, /interfaces\[0\]\.policy: .*bad-policy\.yaml:3: rules\[0\]\.limit\.rate: rate "0" must be at least 1/);
  assert.match(e.message, /interfaces\[0\]\.limits\.rate/);
});
