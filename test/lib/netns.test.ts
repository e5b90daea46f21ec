// Tests for the namespace testbed: connectivity across a veth, nothing in the host namespace, and
// no leftovers after cleanup, whether the test returns, throws, exits or is killed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  assertNoLeftovers,
  bpfNameMatches,
  bpfObjName,
  type Leftover,
  listLeftovers,
  nsExec,
  run,
  runId,
  Testbed,
  withTestbed,
} from './netns';

function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const isRoot = process.getuid?.() === 0;
const haveIp = have('ip');
const havePing = have('ping');
const haveBpftool = have('bpftool');
const needs = !isRoot
  ? 'needs root (network namespaces)'
  : !haveIp
    ? 'needs iproute2 (`ip`)'
    : !haveBpftool
      ? 'needs bpftool (leftover check)'
      : undefined;

function hostLinks(): string[] {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((x): x is string => x !== undefined);
}

/** A run id for a child process, distinct from ours so the checks do not see each other. */
function childId(): string {
  return `slc${randomBytes(4).readUInt32BE().toString(36).padStart(6, '0').slice(-6)}`;
}

test('runId: short, stable, and taken from SLUICE_TEST_RUN_ID when set', () => {
  const id = runId();
  assert.match(id, /^[a-z][a-z0-9]{3,9}$/);
  if (process.env['SLUICE_TEST_RUN_ID'] === undefined) assert.match(id, /^sl[a-z0-9]{6}$/);
  assert.equal(runId(), id);
  assert.ok(`v${id}zza`.length <= 15, 'interface names fit in IFNAMSIZ-1');
  const lib = join(__dirname, 'netns.js');
  const print = `process.stdout.write(require(${JSON.stringify(lib)}).runId())`;
  const env = { ...process.env, SLUICE_TEST_RUN_ID: 'slfixed1' };
  assert.equal(execFileSync(process.execPath, ['-e', print], { env, encoding: 'utf8' }), 'slfixed1');
  const bad = { ...process.env, SLUICE_TEST_RUN_ID: 'Bad-Id-That-Is-Too-Long' };
  assert.throws(() => execFileSync(process.execPath, ['-e', print], { env: bad, stdio: 'ignore' }));
  const { SLUICE_TEST_RUN_ID: _drop, ...noEnv } = process.env;
  const a = execFileSync(process.execPath, ['-e', print], { env: noEnv, encoding: 'utf8' });
  const b = execFileSync(process.execPath, ['-e', print], { env: noEnv, encoding: 'utf8' });
  assert.notEqual(a, b, 'each process draws its own id');
});

test('BPF object names: bpfObjName keeps the id, truncated names match on an id prefix', () => {
  const n = bpfObjName('_ratelimit_state');
  assert.equal(n.length, 15);
  assert.ok(n.startsWith(runId()));
  assert.ok(bpfNameMatches(n, runId()));
  assert.ok(bpfNameMatches('xdp_sl3k9x2a_rl', 'sl3k9x2a'));
  assert.ok(bpfNameMatches('sluice_rl_sl3k9', 'sl3k9x2a'), 'cut at 15 chars, ends in a 5-char id prefix');
  assert.ok(!bpfNameMatches('sluice_rl_sl3k', 'sl3k9x2a'), 'not truncated: the whole id must be there');
  assert.ok(!bpfNameMatches('sluice_rl_xsl3k', 'sl3k9x2a'), 'a 4-char prefix is too weak');
  assert.ok(!bpfNameMatches('sluice_ratelimi', 'sl3k9x2a'));
});

describe('testbed', { skip: needs }, () => {
  // Test files run one after another may share SLUICE_TEST_RUN_ID: what an earlier file left is
  // reported here once, as a diagnostic, and otherwise not blamed on these tests.
  let earlier: Leftover[] = [];
  const clean = (o: { waitMs?: number } = {}): Promise<void> => assertNoLeftovers(runId(), { ...o, except: earlier });
  before(async () => {
    earlier = await listLeftovers(runId());
    if (earlier.length > 0) console.error(`# leftovers from before these tests: ${JSON.stringify(earlier)}`);
  });
  after(async () => {
    await clean({ waitMs: 2000 });
  });

  test('two namespaces and a veth: ping v4 and v6 across, nothing in the host namespace', { skip: havePing ? undefined : 'ping not installed (apt-get install iputils-ping)' }, async (t) => {
    const tb = new Testbed();
    t.after(() => tb.cleanup());
    const ns1 = await tb.addNs('left');
    const ns2 = await tb.addNs('right');
    assert.ok(ns1.includes(runId()) && ns2.includes(runId()));
    const v = await tb.addVeth(ns1, ns2, { numRxQueues: 4, numTxQueues: 2 });
    for (const end of [v.a, v.b]) {
      assert.ok(end.ifname.length <= 15, end.ifname);
      assert.ok(end.ifname.includes(runId()), end.ifname);
    }
    assert.deepEqual(hostLinks().filter((l) => l.includes(runId())), [], 'no link of ours in the host namespace');
    assert.deepEqual(hostLinks().filter((l) => l === v.a.ifname || l === v.b.ifname), []);

    const details = await tb.exec(ns1, 'ip', ['-d', 'link', 'show', v.a.ifname], { check: true });
    assert.match(details.stdout, /numtxqueues 2 numrxqueues 4/);
    assert.match(details.stdout, new RegExp(`link/ether ${v.a.mac}`));
    for (const ns of [ns1, ns2]) {
      const r4 = await tb.exec(ns, 'ip', ['-4', 'route', 'show', 'default'], { check: true });
      const r6 = await tb.exec(ns, 'ip', ['-6', 'route', 'show', 'default'], { check: true });
      assert.equal(r4.stdout.trim() + r6.stdout.trim(), '', `no default route in ${ns}`);
      const lo = await tb.exec(ns, 'ip', ['-o', 'link', 'show', 'lo'], { check: true });
      assert.match(lo.stdout, /UP/);
    }

    for (const [ns, peer] of [[ns1, v.b], [ns2, v.a]] as const) {
      const p4 = await tb.exec(ns, 'ping', ['-4', '-c1', '-W1', peer.ipv4], { timeoutMs: 5000 });
      assert.equal(p4.code, 0, `ping ${peer.ipv4} from ${ns}: ${p4.stdout}${p4.stderr}`);
      const p6 = await tb.exec(ns, 'ping', ['-6', '-c1', '-W1', peer.ipv6], { timeoutMs: 5000 });
      assert.equal(p6.code, 0, `ping ${peer.ipv6} from ${ns}: ${p6.stdout}${p6.stderr}`);
    }
    // Off-link addresses have nowhere to go.
    const out = await tb.exec(ns1, 'ping', ['-c1', '-W1', '192.0.2.1'], { timeoutMs: 5000 });
    assert.notEqual(out.code, 0);
    assert.match(out.stderr + out.stdout, /unreachable/i);

    const found = await listLeftovers(runId(), { except: earlier });
    assert.deepEqual(found.filter((l) => l.kind === 'netns').map((l) => l.name).sort(), [ns1, ns2].sort(), 'the checker sees live namespaces');

    await tb.cleanup();
    await tb.cleanup(); // idempotent
    await clean();
    assert.throws(() => tb.exec(ns1, 'true'), /cleaned up/);
  });

  test('cleanup happens when the body throws', async () => {
    let names: string[] = [];
    await assert.rejects(
      withTestbed(async (tb) => {
        const a = await tb.addNs('a');
        const b = await tb.addNs('b');
        await tb.addVeth(a, b);
        names = [...tb.nsNames];
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(names.length, 2);
    await clean();
  });

  test('exec: exit codes, stderr, stdin and timeouts', async (t) => {
    const tb = new Testbed();
    t.after(() => tb.cleanup());
    const ns = await tb.addNs('x');
    const ok = await tb.exec(ns, 'sh', ['-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual([ok.code, ok.stdout, ok.stderr, ok.timedOut], [3, 'out\n', 'err\n', false]);
    await assert.rejects(tb.exec(ns, 'false', [], { check: true }), /exited 1/);
    const cat = await tb.exec(ns, 'cat', [], { input: 'hello' });
    assert.equal(cat.stdout, 'hello');
    const slow = await tb.exec(ns, 'sleep', ['5'], { timeoutMs: 200 });
    assert.equal(slow.timedOut, true);
    assert.equal(slow.code, null);
    const links = await nsExec(ns, 'ip', ['-o', 'link'], { check: true });
    assert.deepEqual(links.stdout.trim().split('\n').length, 1, 'a fresh namespace has only lo');
    await assert.rejects(run('/nonexistent/sluice-binary', []), /ENOENT/);
    assert.throws(() => tb.exec('not-ours', 'true'), /not a namespace of this testbed/);
  });

  test('spawned processes are killed by cleanup', async () => {
    const tb = new Testbed();
    const ns = await tb.addNs('bg');
    const child = tb.spawn(ns, 'sleep', ['600']);
    await new Promise((r) => child.once('spawn', r));
    const pid = child.pid!;
    assert.ok(existsSync(`/proc/${pid}`));
    await tb.cleanup();
    assert.ok(child.exitCode !== null || child.signalCode !== null, 'child has exited');
    await clean();
  });

  test('last resort: the exit hook and signal handler clean up a process that never called cleanup()', async () => {
    const lib = join(__dirname, 'netns.js');
    const script = (how: string): string => `
      const { Testbed } = require(${JSON.stringify(lib)});
      (async () => {
        const tb = new Testbed();
        const a = await tb.addNs('a'), b = await tb.addNs('b');
        await tb.addVeth(a, b);
        ${how}
      })();`;
    const cases: Array<[string, string]> = [
      ['process.exit', 'process.exit(3);'],
      ['uncaught exception', "throw new Error('test body blew up');"],
      ['SIGTERM', "process.stdout.write('ready\\n'); setInterval(() => {}, 1000);"],
    ];
    for (const [label, how] of cases) {
      const id = childId();
      const child = spawn(process.execPath, ['-e', script(how)], {
        env: { ...process.env, SLUICE_TEST_RUN_ID: id },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      const ready = new Promise<void>((r) =>
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (stdout.includes('ready')) r();
        }),
      );
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (c, s) => r([c, s])));
      if (label === 'SIGTERM') {
        await Promise.race([ready, exited]);
        // Before the kill the namespaces must really be there, or this proves nothing.
        const live = await listLeftovers(id);
        child.kill(live.filter((x) => x.kind === 'netns').length === 2 ? 'SIGTERM' : 'SIGKILL');
      }
      const [code, signal] = await exited;
      try {
        if (label === 'process.exit') assert.equal(code, 3, stderr);
        if (label === 'uncaught exception') assert.match(stderr, /test body blew up/);
        if (label === 'SIGTERM') assert.equal(signal, 'SIGTERM', 'dies of the signal after cleaning up');
        await assertNoLeftovers(id);
      } finally {
        // If the hook failed, do not leave the child's namespaces behind for the next run.
        for (const l of await listLeftovers(id)) if (l.kind === 'netns') await run('ip', ['netns', 'del', l.name]);
      }
    }
  });

  test('the leftover check finds pinned paths and loaded maps of the run', async (t) => {
    const bpffs = '/sys/fs/bpf';
    const mounted = (await run('stat', ['-f', '-c', '%T', bpffs])).stdout.trim() === 'bpf_fs';
    if (!mounted) {
      t.skip(`${bpffs} is not a BPF filesystem`);
      return;
    }
    const name = bpfObjName('_lc');
    const pin = join(bpffs, `${runId()}_leftover_check`);
    try {
      const r = await run('bpftool', ['map', 'create', pin, 'type', 'array', 'key', '4', 'value', '4', 'entries', '1', 'name', name]);
      if (r.code !== 0) {
        t.skip(`cannot create a BPF map here: ${r.stderr.trim()}`);
        return;
      }
      const found = await listLeftovers(runId());
      assert.ok(found.some((l) => l.kind === 'bpffs' && l.name === pin), JSON.stringify(found));
      assert.ok(found.some((l) => l.kind === 'map' && l.name === name), JSON.stringify(found));
      await assert.rejects(clean(), new RegExp(`map ${name}`));
    } finally {
      rmSync(pin, { force: true });
    }
    // The map is freed once its last reference (the pin) is gone; that is asynchronous.
    await clean({ waitMs: 3000 });
  });

  test('the bpffs walk is recursive', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sluice-fakebpffs-'));
    try {
      mkdirSync(join(root, 'a', 'b', `x_${runId()}_y`), { recursive: true });
      const found = await listLeftovers(runId(), { bpffs: root, except: earlier });
      assert.deepEqual(found.map((l) => [l.kind, l.name]), [['bpffs', join(root, 'a', 'b', `x_${runId()}_y`)]]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
