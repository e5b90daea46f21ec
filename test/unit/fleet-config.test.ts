/**
 * Issue 14: the fleet in the daemon's config (fleet: standalone Redis or a Cluster's seed nodes,
 * name, interval, password file, TLS) and global rules in policies (scope: global, local:), each
 * bad input one clear problem at its place.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ConfigError, parseConfig } from '../../src/config';
import { parsePolicy } from '../../src/config/policy-file';
import { compilePolicy } from '../../src/limiter/policy';
import { policyOf } from '../../src/agent/protection';
import { RuleFlags } from '../../src/generated/types';

const dir = mkdtempSync(join(tmpdir(), 'sluice-fleet-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function problems(text: string): string[] {
  try {
    parseConfig(text, join(dir, 'sluice.yaml'));
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.problems.map((p) => `${p.path}: ${p.message}`);
  }
  assert.fail('expected a ConfigError');
}

test('a fleet on a standalone Redis: defaults filled in, the password read from its file', () => {
  writeFileSync(join(dir, 'redis.pw'), 's3cret-password\n');
  chmodSync(join(dir, 'redis.pw'), 0o600);
  const c = parseConfig('interfaces: []\nfleet: { redis: "127.0.0.1:6379", password_file: redis.pw, node: edge-1 }\n', join(dir, 'sluice.yaml'));
  assert.deepEqual({ ...c.fleet }, {
    mode: 'standalone', nodes: [{ host: '127.0.0.1', port: 6379 }], name: 'sluice', node: 'edge-1', intervalMs: 100, timeoutMs: 100,
    maxKeys: 16384, username: null, password: 's3cret-password', tls: null,
  });
  assert.equal(parseConfig('interfaces: []\n', join(dir, 'sluice.yaml')).fleet, null);
});

test('a fleet on a Cluster: seed nodes, interval and timeout with units', () => {
  const c = parseConfig('interfaces: []\nfleet: { cluster: ["10.0.0.1:7000", "[::1]:7001"], name: edge, interval: 250ms, timeout: 50ms }\n', join(dir, 'sluice.yaml'));
  assert.equal(c.fleet!.mode, 'cluster');
  assert.deepEqual(c.fleet!.nodes, [{ host: '10.0.0.1', port: 7000 }, { host: '::1', port: 7001 }]);
  assert.equal(c.fleet!.intervalMs, 250);
  assert.equal(c.fleet!.timeoutMs, 50);
});

test('bad fleet settings: each a problem at its place', () => {
  assert.match(problems('interfaces: []\nfleet: { name: x }\n').join('\n'), /fleet: required: redis \(HOST:PORT of a standalone Redis\) or cluster/);
  assert.match(problems('interfaces: []\nfleet: { redis: "a:1", cluster: ["b:2"] }\n').join('\n'), /fleet: redis and cluster both given/);
  assert.match(problems('interfaces: []\nfleet: { redis: localhost }\n').join('\n'), /fleet.redis: expected a Redis node as HOST:PORT/);
  assert.match(problems('interfaces: []\nfleet: { redis: "a:1", interval: 5ms }\n').join('\n'), /fleet.interval: .*at least/);
  assert.match(problems('interfaces: []\nfleet: { redis: "a:1", password_file: nope }\n').join('\n'), /fleet.password_file: cannot read the password file .*ENOENT/);
  assert.match(problems('interfaces: []\nfleet: { redis: "a:1", max_keys: 1M }\n').join('\n'), /fleet.max_keys: max_keys must be at most 16384/);
});

test('scope global and local: in defaults, rules and an interface\'s limits', () => {
  const p = parsePolicy('defaults: { rate: 1000, scope: global, local: 300 }\nrules:\n  - { name: dns, match: { proto: udp, dst_port: 53 }, limit: { rate: 50, scope: node } }\n  - { name: web, match: { proto: tcp }, limit: { rate: 600, scope: global } }\n', join(dir, 'p.yaml'));
  assert.equal(p.limits.scope, 'global');
  assert.equal(p.limits.localRate, 300);
  assert.equal(p.rules[0]!.scope, undefined, 'scope node: this node alone');
  assert.equal(p.rules[1]!.scope, 'global');
  assert.equal(p.rules[1]!.localPps, undefined, 'a rule with its own rate has its own fallback: that rate');
  const compiled = compilePolicy(policyOf({ limits: p.limits, rules: p.rules }), 8);
  assert.ok(compiled.rules[0]!.flags & RuleFlags.GLOBAL);
  assert.equal(compiled.rules[0]!.pkt.rate, 300n, 'the kernel holds the local fallback; the agent the global limit');
  assert.equal(compiled.rules[1]!.flags & RuleFlags.GLOBAL, 0);
  assert.equal(compiled.rules[2]!.pkt.rate, 600n);
  const c = parseConfig('interfaces:\n  - { iface: eth1, limits: { rate: 1000, scope: global, local: 250/s } }\n', join(dir, 'sluice.yaml'));
  assert.equal(c.interfaces[0]!.limits.scope, 'global');
  assert.equal(c.interfaces[0]!.limits.localRate, 250);
});

test('scope global with what the fleet cannot share is refused with a reason', () => {
  const bad = (limits: string): string => problems(`interfaces:\n  - { iface: eth1, limits: ${limits} }\n`).join('\n');
  assert.match(bad('{ rate: 1000, scope: global, algorithm: token }'), /scope global works in fixed windows/);
  assert.match(bad('{ rate: 1000, scope: global, bytes_rate: 1MB }'), /a byte limit \(bytes_rate\) cannot be shared/);
  assert.match(bad('{ rate: 1000, scope: everywhere }'), /expected one of node, global/);
  assert.match(bad('{ rate: 1000, local: 300 }'), /local is the fallback of a global rule: it needs scope global/);
});
