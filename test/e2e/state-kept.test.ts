/**
 * A source's spent bucket stays spent through a change killed at any of its points and the next
 * start that finishes or undoes it (issue 11, the fault suite's over-limit rows): through the
 * `sluice` command on a veth pair in namespaces this test creates, pins and settings under private
 * roots, the verdicts read at a UDP receiver behind the program.
 *
 * The policies: token bucket 1/h burst 3, and 2/h burst 3 (the same algorithm and time scale, so a
 * flip between them keeps each key's state: limiter.ts, epochs). A source that sent its 3 has
 * nothing left for an hour under either. If a killed `up` or `policy apply`, the journal's roll
 * forward or back, or the next start's adoption and re-apply started the key afresh (fresh maps
 * pinned beside the running program's, a new epoch, a state word keyed by rule slot or half), the
 * source would get a new burst: 3 more datagrams through. The control at the end shows that this
 * check sees such a thing: `up --reset-state` (fresh state, on purpose) lets the next 3 through.
 */
import { removePrivateRoots } from '../lib/private-root';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { BIN, ok, sluice } from '../lib/cli';
import { assertNoLeftovers, Testbed, type Veth } from '../lib/netns';
import { udpReceiver, udpSend } from '../lib/traffic';

const tb = new Testbed();
const dir = mkdtempSync(join(tmpdir(), 'sluice-kept-'));
let cli: string;
let srv: string;
let veth: Veth;
let on: string[];

const OLD = join(dir, 'old.yaml');
const NEW = join(dir, 'new.yaml');
writeFileSync(OLD, 'defaults: { algorithm: token, rate: 1/h, burst: 3 }\n');
writeFileSync(NEW, 'defaults: { algorithm: token, rate: 2/h, burst: 3 }\n');

before(async () => {
  cli = await tb.addNs('cli');
  srv = await tb.addNs('srv');
  veth = await tb.addVeth(cli, srv);
  on = ['--iface', veth.b.ifname, '--netns', srv];
});

after(async () => {
  try {
    await sluice('down', ...on);
    await tb.cleanup();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    removePrivateRoots();
  }
  await assertNoLeftovers();
});

/** Datagrams from the client that reach the server's socket, of n sent. */
async function through(n: number): Promise<number> {
  const r = await udpReceiver(tb, srv, 9000, 10_000);
  await udpSend(tb, cli, veth.b.ipv4, n);
  await new Promise((res) => setTimeout(res, 200));
  return (await r.result()).received;
}

/** `sluice …` with extra environment; reports the signal that ended it. */
function run(env: Record<string, string>, ...args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('exit', (code, signal) => res({ code, signal, stderr }));
  });
}

test('a spent bucket stays spent through `up` and `policy apply` killed at each point of the change, and the next start', { timeout: 240_000 }, async (t) => {
  await ok('up', ...on, '--policy', OLD);
  assert.equal(await through(10), 3, 'a fresh source gets its burst of 3, then nothing');
  const cases: { args: string[]; at?: string }[] = [
    // Killed with the journal written, the kernel not flipped: the next start rolls back.
    { args: ['up', ...on, '--policy', NEW], at: 'journal' },
    // Killed with the kernel flipped, the settings not saved: the next start rolls forward.
    { args: ['up', ...on, '--policy', NEW], at: 'flip' },
    { args: ['up', ...on, '--policy', OLD], at: 'save' },
    { args: ['policy', 'apply', NEW, ...on], at: 'flip' },
    // Run to its end, then the next start (adopt, re-apply what is saved).
    { args: ['up', ...on, '--policy', OLD] },
  ];
  for (const c of cases) {
    const what = `${c.args.slice(0, c.args[0] === 'policy' ? 2 : 1).join(' ')} ${c.at ? `killed at ${c.at}` : 'to its end'}`;
    const r = await run(c.at ? { SLUICE_TEST_CRASH_AT: c.at } : {}, ...c.args);
    if (c.at) assert.equal(r.signal, 'SIGKILL', `${what}: ${r.code} ${r.stderr}`);
    else assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    await ok('up', ...on); // the next start
    assert.equal(await through(3), 0, `${what}, then the next start: the source's spent bucket was refilled (a key started afresh)`);
    t.diagnostic(`${what}: still spent`);
  }
  // The control: fresh state on purpose is seen as such.
  await ok('up', ...on, '--reset-state');
  assert.equal(await through(3), 3, 'after --reset-state the source has a fresh burst: this check sees a key started afresh');
});
