/**
 * Issue 12, step 7: operator traps, one test each, through the real command on a veth pair in
 * namespaces this test creates. Each of these failed on 3d14d9d (the base of the issue).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { BIN, json, ok, sluice } from '../lib/cli';
import { assertNoLeftovers, run, Testbed, type Veth } from '../lib/netns';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), 'sluice-traps-'));
let srv: string;
let veth: Veth;
let on: string[];

before(async () => {
  const cli = await tb.addNs('cli');
  srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  on = ['--iface', veth.b.ifname, '--netns', srv];
  await ok('up', ...on, '--rate', '1000/s');
});

after(async () => {
  await sluice('down', ...on);
  await tb.cleanup();
  rmSync(dir, { recursive: true, force: true });
  await assertNoLeftovers();
});

test('trap 7a: `deny del` removes what `deny add` stored, in any spelling; deleting an absent entry is an error', async () => {
  await ok('deny', 'add', ...on, '192.0.2.1', '2001:DB8:0:0::1');
  let l = await json<{ deny: string[] }>('deny', 'list', ...on);
  assert.deepEqual(l.deny, ['192.0.2.1/32', '2001:db8::1/128']);
  await ok('deny', 'del', ...on, '192.0.2.1', '2001:db8:0000::1/128');
  l = await json<{ deny: string[] }>('deny', 'list', ...on);
  assert.deepEqual(l.deny, [], 'both removed, whatever their spelling');
  await ok('deny', 'add', ...on, '198.51.100.0/24');
  const r = await sluice('deny', 'del', ...on, '198.51.100.0/24', '203.0.113.9');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /SLUICE_E_NOT_IN_LIST/);
  assert.match(r.stderr, /not in the deny list of .*: 203\.0\.113\.9\/32, so nothing was removed/);
  l = await json<{ deny: string[] }>('deny', 'list', ...on);
  assert.deepEqual(l.deny, ['198.51.100.0/24'], 'nothing removed when one entry is absent');
  await ok('deny', 'del', ...on, '198.51.100.0/24');
});

test('trap 7b: argument errors exit 2 with one line, its code and a hint; every error prints its code, also in --json', async () => {
  let r = await sluice('set', ...on, '--rate', 'fast');
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 2, `one line and a hint, not the help:\n${r.stderr}`);
  assert.match(lines[0]!, /^sluice: SLUICE_E_INVALID_ARGUMENT: .*rate "fast" is not a rate/);
  assert.match(lines[1]!, /`sluice set --help`/);
  r = await sluice('deny', 'add', ...on, '10.0.0.300');
  assert.equal(r.code, 2, `an invalid prefix is an invalid argument: ${r.stderr}`);
  assert.match(r.stderr, /^sluice: SLUICE_E_INVALID_ARGUMENT: .*10\.0\.0\.300/);
  r = await sluice('up', '--iface', 'nosuch0', '--netns', srv, '--json');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^sluice: SLUICE_E_NO_IFACE: /);
  assert.deepEqual(Object.keys(JSON.parse(r.stdout).error).sort(), ['code', 'exit_code', 'message']);
  assert.equal(JSON.parse(r.stdout).error.code, 'SLUICE_E_NO_IFACE');
  r = await sluice('down', '--iface', 'nosuch0', '--netns', srv, '--json');
  assert.equal(r.code, 3);
  assert.equal(JSON.parse(r.stdout).error.code, 'SLUICE_E_NOT_PROTECTED');
  r = await sluice('lab', 'up', '--clients', '99');
  assert.equal(r.code, 2, 'nested subcommands too');
  assert.match(r.stderr, /^sluice: SLUICE_E_INVALID_ARGUMENT: .*\n\(`sluice lab up --help`/);
});

test('trap 7c: an empty policy file is refused, and a policy never shrinks the management allowlist without --allow-mgmt-shrink', async () => {
  const empty = join(dir, 'empty.yaml');
  writeFileSync(empty, '# cut short\n');
  const withMgmt = join(dir, 'mgmt.yaml');
  writeFileSync(withMgmt, 'mgmt: [192.0.2.10, "2001:db8::/64"]\n');
  const without = join(dir, 'without.yaml');
  writeFileSync(without, 'deny: [198.51.100.0/24]\n');
  let r = await sluice('policy', 'check', empty);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /the policy file is empty/);
  await ok('policy', 'apply', withMgmt, ...on);
  r = await sluice('policy', 'apply', empty, ...on);
  assert.equal(r.code, 2, `an empty file is refused: ${r.stderr}`);
  r = await sluice('policy', 'apply', without, ...on);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^sluice: SLUICE_E_MGMT_SHRINK: .*192\.0\.2\.10\/32, 2001:db8::\/64 out of the management allowlist/);
  assert.deepEqual((await json<{ mgmt: string[] }>('mgmt', 'list', ...on)).mgmt, ['192.0.2.10/32', '2001:db8::/64'], 'nothing changed');
  await ok('policy', 'apply', without, ...on, '--allow-mgmt-shrink');
  assert.deepEqual((await json<{ mgmt: string[] }>('mgmt', 'list', ...on)).mgmt, [], 'removed on purpose');
  const none = join(dir, 'none.yaml');
  writeFileSync(none, '{}\n');
  await ok('policy', 'apply', none, ...on); // `{}`: nothing, on purpose
});

test('trap 7d: list edits made at runtime survive the next `policy apply` of the same file, shown as a runtime layer; --drop-runtime drops them', async () => {
  const f = join(dir, 'incident.yaml');
  writeFileSync(f, 'mgmt: [192.0.2.10]\ndeny: [198.51.100.0/24]\n');
  await ok('policy', 'apply', f, ...on);
  await ok('deny', 'add', ...on, '203.0.113.9'); // during an incident
  await ok('deny', 'del', ...on, '198.51.100.0/24'); // an entry of the file, lifted at runtime
  const r = await sluice('policy', 'apply', f, ...on);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /runtime list edits kept .*deny \+203\.0\.113\.9\/32, deny -198\.51\.100\.0\/24/);
  const l = await json<{ deny: string[]; runtime: { add: string[]; del: string[] } }>('deny', 'list', ...on);
  assert.deepEqual(l.deny, ['203.0.113.9/32'], 'the runtime edits are still in force');
  assert.deepEqual(l.runtime, { add: ['203.0.113.9/32'], del: ['198.51.100.0/24'] });
  const show = await json<{ lists: { deny: string[] }; runtime: { add: { deny: string[] }; del: { deny: string[] } } }>('policy', 'show', ...on);
  assert.deepEqual([show.runtime.add.deny, show.runtime.del.deny], [['203.0.113.9/32'], ['198.51.100.0/24']]);
  await ok('policy', 'apply', f, ...on, '--drop-runtime');
  const d = await json<{ deny: string[]; runtime: { add: string[]; del: string[] } }>('deny', 'list', ...on);
  assert.deepEqual(d.deny, ['198.51.100.0/24'], 'the file alone');
  assert.deepEqual(d.runtime, { add: [], del: [] });
});

test('trap 7e: sizes are checked at parse time; new_states_per_sec can be set; run without a socket stays up; lab as non-root says so', async () => {
  for (const args of [['up', ...on, '--max-entries', '5G'], ['up', ...on, '--max-rules', '70000'], ['policy', 'check', join(dir, 'none.yaml'), '--max-rules', 'abc']]) {
    const r = await sluice(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^sluice: SLUICE_E_INVALID_ARGUMENT: option '--max-(entries|rules) <n>' argument/);
  }
  const set = await json<{ new_states_per_sec: number }>('set', ...on, '--new-states-per-sec', '50k/s');
  assert.equal(set.new_states_per_sec, 50_000);
  const st = await json<{ new_states_per_sec: number }>('set', ...on, '--rate', '1000/s');
  assert.equal(st.new_states_per_sec, 50_000, 'kept across other changes');
  await ok('set', ...on, '--new-states-per-sec', '0');
  // The daemon with no API socket and no TCP listener keeps running until a signal.
  const cfg = join(dir, 'nosock.yaml');
  writeFileSync(cfg, 'interfaces: []\napi: { socket: null }\nlog: { level: silent }\n');
  const d = spawn(process.execPath, [BIN, 'run', '--config', cfg], { stdio: 'ignore', env: { ...process.env, SLUICE_STATE_DIR: join(dir, 'daemon-state') } });
  const exited = new Promise<number | null>((res) => d.once('exit', (c) => res(c)));
  const early = await Promise.race([exited, new Promise<'alive'>((res) => setTimeout(() => res('alive'), 2500))]);
  if (early !== 'alive') assert.fail(`sluice run exited at once (code ${early})`);
  d.kill('SIGTERM');
  assert.equal(await exited, 0);
  const lab = await run('runuser', ['-u', 'nobody', '--', process.execPath, BIN, 'lab', 'up']);
  assert.equal(lab.code, 4, lab.stderr);
  assert.match(lab.stderr, /SLUICE_E_PERMISSION: the lab creates network namespaces .* run it as root/);
});

test('trap 7f: policy check shows names as written, byte limits, bursts and blocks; every problem at once; snake_case JSON', async () => {
  const f = join(dir, 'check.yaml');
  writeFileSync(f, `geoip:
  tiers: { domestic: [DE] }
  default_tier: foreign
rules:
  - name: syn
    match: { proto: tcp, tcp_flags: syn, tier: foreign }
    limit: { algorithm: token, rate: 50/s, burst: 20, bytes_rate: 2MB/s, bytes_burst: 64KB }
    on_exceed: { block: 30s }
`);
  const text = await ok('policy', 'check', f);
  const row = text.split('\n').find((l) => l.startsWith('syn'))!;
  assert.match(row, /proto tcp syn tier foreign/, row);
  assert.match(row, /50 pkt\/s burst 20, 2\.0 MB\/s burst 64\.0 kB/, row);
  assert.match(row, /block 30s/, row);
  const j = await ok('policy', 'check', f, '--json');
  const camel = [...j.matchAll(/"([a-z]+[A-Z][A-Za-z]*)":/g)].map((m) => m[1]);
  assert.deepEqual(camel, [], 'no camelCase keys');
  const rule = JSON.parse(j).rules[0];
  assert.deepEqual([rule.pps_burst, rule.bps, rule.bps_burst, rule.block_ms], [20, 2_000_000, 64_000, 30_000]);
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'rules:\n  - name: a\n    match: { protocol: udp }\n  - name: a\n');
  const r = await sluice('policy', 'check', bad);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /rules\[0\]\.match\.protocol: unknown key \(did you mean proto\?\)/);
  assert.match(r.stderr, /rules\[1\]\.name: the name a is used by rules\[0\] too/, 'the duplicate with the other problems');
});

test('trap 7g: status says a daemon owns the interface, and the command refuses changes the daemon would set back as drift', async () => {
  const cfg = join(dir, 'managed.yaml');
  writeFileSync(cfg, `interfaces:\n  - { iface: ${veth.b.ifname}, netns: ${srv}, limits: { rate: 1000/s } }\napi: { socket: null }\nlog: { level: silent }\nreconcile_interval: 1h\n`);
  const d = spawn(process.execPath, [BIN, 'run', '--config', cfg], { stdio: 'ignore' });
  const exited = new Promise<number | null>((res) => d.once('exit', (c) => res(c)));
  try {
    type St = { interfaces: { iface: string; netns: string; managed_by: { kind: string; pid: number } | null }[] };
    let mine: St['interfaces'][number] | undefined;
    for (let i = 0; i < 100; i++) {
      // While the daemon adopts the interface, status may see it between two states: ask again.
      const r = await sluice('status', '--json');
      mine = r.code === 0 ? (JSON.parse(r.stdout) as St).interfaces.find((x) => x.iface === veth.b.ifname && x.netns === srv) : undefined;
      if (mine?.managed_by) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(mine?.managed_by && { kind: mine.managed_by.kind, pid: mine.managed_by.pid }, { kind: 'daemon', pid: d.pid });
    assert.match(await ok('status'), new RegExp(`managed by the sluice daemon \\(process ${d.pid}`));
    for (const args of [['set', ...on, '--rate', '5'], ['deny', 'add', ...on, '203.0.113.7'], ['policy', 'apply', join(dir, 'none.yaml'), ...on]]) {
      const r = await sluice(...args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^sluice: SLUICE_E_MANAGED: .* is managed by the sluice daemon \\(process ${d.pid}.*nothing was changed`));
    }
    const st = await json<{ interfaces: { iface: string; netns: string; limits: { rate: number } }[] }>('status');
    assert.equal(st.interfaces.find((x) => x.iface === veth.b.ifname && x.netns === srv)!.limits.rate, 1000, 'unchanged');
  } finally {
    d.kill('SIGTERM');
    await exited;
  }
});
