/**
 * Nothing can unprotect a machine by accident (issue 11, steps 2, 3 and 4), end to end on a veth
 * pair in namespaces this test creates, with pins and settings under private roots
 * (test/lib/private-root.ts). Every assertion about what runs reads the kernel (the live half's
 * rules and list trie, through Limiter), not only the files:
 *  - locks: 20 concurrent `sluice deny add` of distinct prefixes all land, in the settings and in
 *    the trie; processes waiting on a lock left by a dead or half-started owner never both enter;
 *    a second daemon on one state directory, or on one interface, is refused;
 *  - transactions: `policy apply` SIGKILLed at each named point (SLUICE_TEST_CRASH_AT) is rolled
 *    forward or back by the next command, settings and kernel agreeing;
 *  - rollback: after `policy apply --confirm-within`, `sluice set` is refused (naming the pending
 *    change) rather than reverted later; a failed rollback shows in `policy show` and `status`.
 */
import { PIN_ROOT, removePrivateRoots, STATE_DIR } from '../lib/private-root';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { startDaemon } from '../../src/cli/daemon';
import { Protection, policyOf } from '../../src/agent/protection';
import { settingsPath, type Place } from '../../src/agent/state';
import { compileLists } from '../../src/limiter/lists';
import { compilePolicy } from '../../src/limiter/policy';
import { REPO } from '../lib/datapath';
import { json, ok, sluice, BIN } from '../lib/cli';
import { assertNoLeftovers, runId, Testbed } from '../lib/netns';
import { sleep, writeConfig } from '../daemon/helpers';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), 'sluice-tx-'));
let pl: Place;
let on: string[];

const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

const POLICY_A = `
defaults: { algorithm: fixed, rate: 100000 }
deny: [192.0.2.1/32]
rules:
  - name: udp-9000
    match: { proto: udp, dst_port: 9000 }
    limit: { rate: 200/s }
`;
const POLICY_B = `
defaults: { algorithm: fixed, rate: 50000 }
deny: [198.51.100.0/24, 203.0.113.7/32]
rules:
  - name: udp-9000
    match: { proto: udp, dst_port: 9000 }
    limit: { rate: 5/s }
  - name: udp-9001
    match: { proto: udp, dst_port: 9001 }
    limit: { rate: 7/s }
`;

/** `sluice …` with extra environment; reports the signal that ended it. */
function run(env: Record<string, string>, ...args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('exit', (code, signal) => res({ code, signal, stdout, stderr }));
  });
}

const listKey = (e: { family: number; plen: number; addr: Buffer; flags: number }): string => `${e.family}/${e.plen}/${e.addr.toString('hex')}/${e.flags}`;

/**
 * What the kernel runs, and whether the saved settings say the same: the live half's rules (id,
 * packet rate, slot by slot) against the settings' policy compiled, and the live list trie against
 * the settings' lists compiled.
 */
function kernel(): { settings: { policyFile: string | null; lists: { deny: string[] } }; agree: boolean; rules: number; deny: number; why: string } {
  const saved = JSON.parse(readFileSync(settingsPath(pl), 'utf8'));
  const p = Protection.open(pl);
  try {
    const v = p.limiter.version();
    const live = p.limiter.rulesOf(v & 1).filter((r) => r.version === v);
    const want = compilePolicy(policyOf(saved), saved.maxRules).rules;
    const liveLists = p.limiter.liveListEntries().map(listKey).sort();
    const wantLists = compileLists(saved.lists).map((e) => listKey({ ...e, addr: Buffer.from(e.addr) })).sort();
    const ruleText = (rs: { id: number; pkt: { rate: bigint } }[]): string => rs.map((r) => `${r.id}:${r.pkt.rate}`).join(',');
    const why = `kernel rules ${ruleText(live)} vs settings ${ruleText(want)}; kernel lists ${liveLists.length} vs settings ${wantLists.length}`;
    const agree = live.length === want.length && ruleText(live) === ruleText(want) && JSON.stringify(liveLists) === JSON.stringify(wantLists);
    return { settings: saved, agree, rules: live.length, deny: saved.lists.deny.length, why };
  } finally {
    p.close();
  }
}

before(async () => {
  const cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  const veth = await tb.addVeth(cli, srv);
  pl = { iface: veth.b.ifname, netns: srv };
  on = ['--iface', pl.iface, '--netns', srv];
  await ok('up', ...on, '--max-entries', '1024');
});

after(async () => {
  try {
    await sluice('policy', 'confirm', ...on);
    await sluice('down', ...on);
    await tb.cleanup();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    removePrivateRoots();
  }
  await assertNoLeftovers();
});

test('20 concurrent `sluice deny add` of distinct prefixes: all 20 in the settings and in the kernel trie', async () => {
  const prefixes = Array.from({ length: 20 }, (_, i) => `10.77.${i}.0/24`);
  const results = await Promise.all(prefixes.map((c) => sluice('deny', 'add', ...on, c)));
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  const k = kernel();
  assert.deepEqual([...k.settings.lists.deny].sort(), [...prefixes].sort(), 'every prefix in the settings');
  assert.ok(k.agree, `the kernel's trie holds what the settings say: ${k.why}`);
  // Concurrent removals lose nothing either.
  const dels = await Promise.all([0, 5, 10, 15].map((i) => sluice('deny', 'del', ...on, ...prefixes.slice(i, i + 5))));
  for (const r of dels) assert.equal(r.code, 0, r.stderr);
  const k2 = kernel();
  assert.deepEqual(k2.settings.lists.deny, []);
  assert.ok(k2.agree, k2.why);
});

test('processes waiting on a lock whose owner is dead (or left it empty) never both enter', async () => {
  // A lock file as a crashed owner leaves it: empty (killed between create and write) or with a dead pid.
  const place = { iface: `${runId()}lk`, netns: null };
  const lockDir = join(STATE_DIR, '.locks');
  mkdirSync(lockDir, { recursive: true });
  const logFile = join(dir, 'lock.log');
  const ROUNDS = 40;
  const script = `const ROUNDS = ${ROUNDS};
    const { withLock } = require(${JSON.stringify(join(REPO, 'dist', 'src', 'agent', 'state.js'))});
    const { appendFileSync } = require('node:fs');
    (async () => {
      for (let i = 0; i < ROUNDS; i++) {
        await withLock(${JSON.stringify(place)}, async () => {
          appendFileSync(${JSON.stringify(logFile)}, 'in ' + process.pid + '\\n');
          await new Promise((r) => setTimeout(r, 1));
          appendFileSync(${JSON.stringify(logFile)}, 'out ' + process.pid + '\\n');
        }, 30000);
      }
    })().catch((e) => { console.error(e); process.exit(1); });`;
  for (const stale of ['', '999999999']) {
    writeFileSync(join(lockDir, `host--${place.iface}.lock`), stale);
    writeFileSync(logFile, '');
    const codes = await Promise.all(Array.from({ length: 8 }, () => new Promise<number | null>((res) => {
      execFile(process.execPath, ['-e', script], { timeout: 60_000 }, (err) => res(err ? (typeof err.code === 'number' ? err.code : 1) : 0));
    })));
    const lines = readFileSync(logFile, 'utf8').trim().split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const [a, b] = [lines[i]!.split(' '), lines[i + 1]!.split(' ')];
      assert.ok(a[0] === 'in' && b[0] === 'out' && a[1] === b[1], `two holders at once (lock left ${JSON.stringify(stale)}): ${lines.slice(Math.max(0, i - 2), i + 4).join(' | ')}`);
    }
    assert.deepEqual(codes, Array(8).fill(0), 'every process got the lock every time (none failed while it changed hands)');
    assert.equal(lines.length, 8 * ROUNDS * 2);
  }
});

test('policy apply killed at each point of its transaction: the next command rolls it forward or back, and kernel and settings agree', async () => {
  const a = file('a.yaml', POLICY_A);
  const b = file('b.yaml', POLICY_B);
  const rulesOf = (f: string): number => (f === b ? 3 : 2);
  await ok('policy', 'apply', a, ...on);
  let from = a;
  for (const at of ['journal', 'flip', 'settings-tmp', 'save']) {
    const to = from === a ? b : a;
    const want = at === 'journal' ? from : to; // before the flip: undone; after it: finished
    const r = await run({ SLUICE_TEST_CRASH_AT: at }, 'policy', 'apply', to, ...on);
    assert.equal(r.signal, 'SIGKILL', `apply was killed at ${at} (exit ${r.code}, ${r.stderr})`);
    // The next command (any command that opens the interface) finishes or undoes the change.
    await ok('status');
    assert.ok(!existsSync(settingsPath(pl).replace(/\.json$/, '.journal.json')), `no journal left after ${at}`);
    assert.deepEqual(readdirSync(dirname(settingsPath(pl))).filter((n) => n.endsWith('.tmp')), [], `no temporary file left after ${at}`);
    const k = kernel();
    assert.equal(k.settings.policyFile, want, `after a crash at ${at}: ${want === to ? 'rolled forward' : 'rolled back'}`);
    assert.ok(k.agree, `after a crash at ${at}, kernel and settings agree: ${k.why}`);
    assert.equal(k.rules, rulesOf(want));
    from = want;
  }
  // And a change right after works as usual.
  await ok('policy', 'apply', a, ...on);
  assert.ok(kernel().agree);
});

test('policy apply --confirm-within, then `sluice set`: refused with the pending change named, never reverted later', async () => {
  const a = file('a2.yaml', POLICY_A);
  const b = file('b2.yaml', POLICY_B);
  await ok('policy', 'apply', a, ...on);
  const applied = await json<{ confirm_by: string; rollback_holder: { kind: string; pid: number } }>('policy', 'apply', b, ...on, '--confirm-within', '5s');
  const set = await sluice('set', ...on, '--rate', '12345');
  assert.equal(set.code, 1, `set is refused while a rollback is pending: ${set.stdout}${set.stderr}`);
  assert.match(set.stderr, /pending change/);
  assert.match(set.stderr, new RegExp(`${b.replace(/[.]/g, '\\.')}`));
  assert.match(set.stderr, /sluice policy confirm/);
  const deny = await sluice('deny', 'add', ...on, '10.99.0.0/16');
  assert.equal(deny.code, 1, 'a list edit is refused too');
  assert.equal(applied.rollback_holder.kind, 'agent');
  const show = await json<{ rollback: { state: string; holder: { pid: number; alive: boolean }; applied: string } }>('policy', 'show', ...on);
  assert.equal(show.rollback.state, 'pending');
  assert.equal(show.rollback.holder.pid, applied.rollback_holder.pid, 'policy show names the process that holds the rollback');
  assert.ok(show.rollback.holder.alive);
  // The deadline passes: the agent restores what was there before the apply (not before the set).
  for (let i = 0; i < 60 && kernel().settings.policyFile !== a; i++) await sleep(250);
  const k = kernel();
  assert.equal(k.settings.policyFile, a, 'the rollback restored the policy from before the apply');
  assert.ok(k.agree, k.why);
  assert.equal(k.rules, 2);
  assert.ok(!k.settings.lists.deny.includes('10.99.0.0/16'));
  // Nothing pending any more: set works, and stays.
  await ok('set', ...on, '--rate', '12345');
  await sleep(500);
  assert.equal(JSON.parse(readFileSync(settingsPath(pl), 'utf8')).limits.rate, 12345);
});

test('a rollback that fails is loud: policy show, status; policy rollback retries it', async () => {
  const a = file('a3.yaml', POLICY_A);
  const b = file('b3.yaml', POLICY_B);
  await ok('policy', 'apply', a, ...on);
  // The agent inherits the environment: its rollback fails at the hook.
  const r = await run({ SLUICE_TEST_FAIL_AT: 'rollback' }, 'policy', 'apply', b, ...on, '--confirm-within', '1s', '--json');
  assert.equal(r.code, 0, r.stderr);
  let show: { rollback: { state: string; failed: { message: string } | null } } | undefined;
  for (let i = 0; i < 40; i++) {
    await sleep(250);
    show = await json('policy', 'show', ...on);
    if (show!.rollback?.state === 'failed') break;
  }
  assert.equal(show!.rollback.state, 'failed', 'policy show says the rollback failed');
  assert.match(show!.rollback.failed!.message, /SLUICE_TEST_FAIL_AT=rollback/);
  const text = await sluice('policy', 'show', ...on);
  assert.match(text.stderr, /ROLLBACK FAILED/);
  const st = await json<{ interfaces: { iface: string; rollback: { state: string } | null }[] }>('status');
  assert.equal(st.interfaces.find((i) => i.iface === pl.iface)!.rollback!.state, 'failed', 'status says so too');
  assert.match((await sluice('status')).stderr, /ROLLBACK FAILED/);
  assert.equal(kernel().settings.policyFile, b, 'the applied policy stays live (kernel and settings agree)');
  assert.ok(kernel().agree);
  const log = readFileSync(settingsPath(pl).replace(/\.json$/, '.rollback.log'), 'utf8');
  assert.match(log, /"event":"rollback_failed"/, 'the agent logged it');
  // Retried by hand (without the hook); the agent, if still retrying, then finds nothing to do.
  await ok('policy', 'rollback', ...on);
  const k = kernel();
  assert.equal(k.settings.policyFile, a);
  assert.ok(k.agree, k.why);
  assert.equal((await json<{ rollback: unknown }>('policy', 'show', ...on)).rollback, null);
});

test('a rollback agent that dies is loud too (orphaned), and policy rollback does its work', async () => {
  const a = file('a5.yaml', POLICY_A);
  const b = file('b5.yaml', POLICY_B);
  await ok('policy', 'apply', a, ...on);
  const applied = await json<{ rollback_holder: { kind: string; pid: number } }>('policy', 'apply', b, ...on, '--confirm-within', '60s');
  process.kill(applied.rollback_holder.pid, 'SIGKILL');
  await sleep(200);
  const show = await sluice('policy', 'show', ...on, '--json');
  assert.equal(JSON.parse(show.stdout).rollback.state, 'orphaned');
  assert.equal(JSON.parse(show.stdout).rollback.holder.alive, false);
  assert.match((await sluice('policy', 'show', ...on)).stderr, new RegExp(`process ${applied.rollback_holder.pid} \\(gone\\).*nothing will roll back by itself`));
  assert.match((await sluice('status')).stderr, /nothing will roll back by itself/);
  await ok('policy', 'rollback', ...on);
  const k = kernel();
  assert.equal(k.settings.policyFile, a);
  assert.ok(k.agree, k.why);
});

test('a change whose rollback is due and whose agent died is rolled back by the next command first', async () => {
  const a = file('a6.yaml', POLICY_A);
  const b = file('b6.yaml', POLICY_B);
  await ok('policy', 'apply', a, ...on);
  const applied = await json<{ rollback_holder: { kind: string; pid: number } }>('policy', 'apply', b, ...on, '--confirm-within', '1s');
  process.kill(applied.rollback_holder.pid, 'SIGKILL');
  await sleep(1500); // past the deadline, nobody left to roll back
  assert.equal(kernel().settings.policyFile, b, 'still the unconfirmed change');
  const r = await sluice('deny', 'add', ...on, '192.0.2.77');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /was not confirmed by .* rolling it back now/);
  const k = kernel();
  assert.equal(k.settings.policyFile, a, 'rolled back before the edit');
  assert.ok(k.settings.lists.deny.some((d: string) => d.startsWith('192.0.2.77')), 'and the edit made on top of it');
  assert.ok(k.agree, k.why);
  assert.equal((await json<{ rollback: unknown }>('policy', 'show', ...on)).rollback, null);
});

test('on an interface a daemon manages, the daemon holds the rollback of a --confirm-within change and runs it', async () => {
  const cfg = join(dir, 'managed.yaml');
  writeConfig(cfg, { interfaces: [{ iface: pl.iface, netns: pl.netns, max_entries: 1024, limits: { rate: 100000 } }], api: { socket: null }, reconcile_interval: '1h' });
  const logs: { event?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => { logs.push(JSON.parse(line) as { event?: string }); } });
  const d = await startDaemon({ configFile: cfg, listen: false, watch: false, logger });
  try {
    const b = file('b4.yaml', POLICY_B);
    const applied = await json<{ rollback_holder: { kind: string; pid: number } }>('policy', 'apply', b, ...on, '--confirm-within', '2s');
    assert.deepEqual(applied.rollback_holder, { kind: 'daemon', pid: process.pid }, 'no agent: the daemon holds it');
    const show = await json<{ rollback: { state: string; holder: { kind: string; alive: boolean } } }>('policy', 'show', ...on);
    assert.equal(show.rollback.state, 'pending');
    assert.ok(show.rollback.holder.alive);
    assert.match((await d.metrics()).body, /^sluice_rollback\{[^}]*state="pending"[^}]*\} 1$/m);
    for (let i = 0; i < 60 && !logs.some((l) => l.event === 'rolled_back'); i++) await sleep(250);
    assert.ok(logs.some((l) => l.event === 'rolled_back'), 'the daemon rolled back and logged it');
    assert.ok(!existsSync(settingsPath(pl).replace(/\.json$/, '.pending.json')));
    const k = kernel();
    assert.notEqual(k.settings.policyFile, b);
    assert.ok(k.agree, k.why);
    assert.equal(k.rules, 1, "the config's policy (one default rule) is back");
  } finally {
    await d.stop({ detach: false });
  }
});

test('a second daemon on one state directory, or on one interface from another state directory, is refused', async () => {
  const place = { iface: `${runId()}dm`, netns: `${runId()}absent` }; // never exists: nothing is attached
  const cfg = join(dir, 'd.yaml');
  writeConfig(cfg, { interfaces: [{ iface: place.iface, netns: place.netns, limits: { rate: 100 } }], api: { socket: null }, reconcile_interval: '1h' });
  const logger = pino({ level: 'silent' });
  const d = await startDaemon({ configFile: cfg, listen: false, watch: false, logger });
  try {
    await assert.rejects(startDaemon({ configFile: cfg, listen: false, watch: false, logger }), { code: 'SLUICE_E_DAEMON_RUNNING' });
    const other = mkdtempSync(join(tmpdir(), 'sluice-state2-'));
    try {
      const r = await run({ SLUICE_STATE_DIR: other }, 'run', '--config', cfg);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /another sluice daemon manages/);
      assert.match(r.stderr, new RegExp(`process ${process.pid}`));
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  } finally {
    await d.stop({ detach: false });
  }
  // Once it is gone, a daemon starts again.
  const d2 = await startDaemon({ configFile: cfg, listen: false, watch: false, logger });
  await d2.stop({ detach: false });
});

void PIN_ROOT;
