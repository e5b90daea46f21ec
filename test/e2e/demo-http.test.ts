/**
 * `sluice demo --http` (the README's web scene), each claim measured within one run against that
 * run's own baseline (no fixed times: ratios on the same machine at the same moment):
 *  - without Sluice the flood hurts the well-behaved clients: p99 >= 5x the baseline's, or fewer
 *    than 90% of their requests answered;
 *  - with Sluice (per-source limits they stay under) it does not: p99 <= 2x the baseline's and at
 *    least 99% answered, and Sluice drops none of their packets;
 *  - a flood that does not hurt is raised, and the demo says so, until one hurts or it has tried
 *    its strongest (and then says that); every attempt before the last must really not have hurt.
 * The thresholds are the issue's, written here, not read from the code under test. Everything is
 * removed afterwards, also after Ctrl-C.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { BIN } from '../lib/cli';
import { checkKeys } from '../lib/json-keys';
import { run, runId } from '../lib/netns';

const ID = `${runId().slice(0, 6)}w`;

const HURT_P99 = 5;
const HURT_SUCCESS = 90;
const HELD_P99 = 2;
const HELD_SUCCESS = 99;

interface Phase {
  flood: string; sluice: boolean; requests: number; completed: number; success_pct: number;
  p50_ms: number | null; p99_ms: number | null; abuser_reached_pps: number; abuser_dropped_pps: number; well_behaved_dropped: number;
}
interface Round { flood: 'http' | 'packet'; attempts: Phase[]; hurt: boolean; could_not_hurt: boolean; with_sluice: Phase | null; held: boolean | null; notes: string[] }
interface Result { baseline: Phase; rounds: Round[]; limit: { rate: number; burst: number }; seconds: number; interrupted: boolean; realtime: boolean }

async function leftovers(id: string): Promise<string[]> {
  const ns = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`sluice-lab-${id}-`));
  const pins = existsSync(`/sys/fs/bpf/sluice/sluice-lab-${id}-srv`) ? ['pins'] : [];
  return [...ns, ...pins];
}

function demo(args: string[]): Promise<Result> {
  return new Promise((res, rej) => execFile(process.execPath, [BIN, 'demo', '--http', '--json', '--id', ID, ...args], { timeout: 110_000, maxBuffer: 1 << 24 },
    (e, stdout, stderr) => (e ? rej(new Error(`${e.message}\n${stderr}`)) : res(JSON.parse(stdout) as Result))));
}

const hurt = (p: Phase, base: Phase): boolean => p.success_pct < HURT_SUCCESS || p.p99_ms === null || p.p99_ms >= HURT_P99 * base.p99_ms!;
const held = (p: Phase, base: Phase): boolean => p.p99_ms !== null && p.success_pct >= HELD_SUCCESS && p.p99_ms <= HELD_P99 * base.p99_ms!;
const show = (p: Phase, base: Phase): string =>
  `${p.flood || 'baseline'}${p.sluice ? ' + Sluice' : ''}: ${p.success_pct}% of ${p.requests} answered, p50 ${p.p50_ms} ms, p99 ${p.p99_ms} ms` +
  `${p === base || p.p99_ms === null ? '' : ` (${(p.p99_ms / base.p99_ms!).toFixed(2)}x)`}`;

/** The checks every round must pass, whatever path it took. */
function checkRound(r: Result, round: Round, levels: number): void {
  const base = r.baseline;
  const where = `${round.flood} round:\n  ${[base, ...round.attempts, ...(round.with_sluice ? [round.with_sluice] : [])].map((p) => show(p, base)).join('\n  ')}`;
  assert.ok(round.attempts.length >= 1 && round.attempts.length <= levels, where);
  // The demo raised a flood only because it did not hurt, and said so each time.
  round.attempts.slice(0, -1).forEach((a) => assert.ok(!hurt(a, base), `raised after a flood that did hurt\n${where}`));
  assert.equal(round.notes.filter((n) => /did not hurt the server on this machine .*raising it/.test(n)).length, round.attempts.length - 1, `a note for each raise\n${where}`);
  const last = round.attempts[round.attempts.length - 1]!;
  assert.equal(round.hurt, hurt(last, base), `the demo's verdict matches the figures\n${where}`);
  if (!round.hurt) {
    // The honest path: raised as far as it goes, and said that even that did not hurt.
    assert.equal(round.could_not_hurt, true, where);
    assert.equal(round.attempts.length, levels, `every level tried before giving up\n${where}`);
    assert.ok(round.notes.some((n) => /^Even this flood did not hurt the server on this machine/.test(n)), where);
  }
  // With Sluice, against the same baseline, the same flood as the last attempt.
  const w = round.with_sluice!;
  assert.equal(w.flood, last.flood, where);
  assert.ok(held(w, base), `with Sluice the well-behaved clients keep p99 <= ${HELD_P99}x the baseline and >= ${HELD_SUCCESS}% answered\n${where}`);
  assert.equal(w.well_behaved_dropped, 0, `Sluice dropped none of the well-behaved clients' packets\n${where}`);
  assert.ok(w.abuser_dropped_pps > 0, `Sluice dropped the abuser's flood\n${where}`);
  assert.ok(w.abuser_reached_pps <= r.limit.rate * 1.1 + r.limit.burst, `the abuser got about its limit through (${w.abuser_reached_pps}/s)\n${where}`);
}

test('demo --http: without Sluice the HTTP flood hurts the well-behaved clients (p99 >= 5x or < 90% answered), with Sluice they keep p99 <= 2x and >= 99%; the packet round too, raised until it hurts or said it could not', async () => {
  const r = await demo([]);
  assert.deepEqual(checkKeys(r).bad, [], 'snake_case keys at every depth');
  assert.equal(r.interrupted, false);
  assert.ok(r.baseline.completed > 0 && r.baseline.success_pct >= HELD_SUCCESS, show(r.baseline, r.baseline));
  assert.deepEqual(r.rounds.map((x) => x.flood), ['http', 'packet']);
  const [http, packet] = r.rounds as [Round, Round];
  checkRound(r, http, 3);
  // The Done-when of the issue: the HTTP flood must hurt here (raised if need be).
  assert.equal(http.hurt, true, `the HTTP flood hurt without Sluice\n${show(http.attempts[http.attempts.length - 1]!, r.baseline)}`);
  checkRound(r, packet, 2);
  console.log(`demo --http: ${r.seconds} s; baseline p99 ${r.baseline.p99_ms} ms; ` + r.rounds.map((x) => `${x.flood}: ${x.attempts.map((a) => `${a.success_pct}%/${a.p99_ms}`).join(' -> ')} | Sluice ${x.with_sluice!.success_pct}%/${x.with_sluice!.p99_ms}`).join('; '));
  assert.deepEqual(await leftovers(ID), []);
});

test('demo --http: a flood too weak to hurt (2 connections) is raised, said so, until it hurts; Sluice then holds', async () => {
  const r = await demo(['--round', 'http', '--connections', '2']);
  const round = r.rounds[0]!;
  assert.ok(round.attempts.length >= 2, `2 connections in a request loop must not hurt, so the demo raises: ${round.attempts.map((a) => show(a, r.baseline)).join('; ')}`);
  checkRound(r, round, 3);
  console.log(`demo --http --connections 2: ${r.seconds} s; ${round.attempts.map((a) => `${a.flood}: ${a.success_pct}%/${a.p99_ms} ms`).join(' -> ')} | Sluice ${round.with_sluice!.success_pct}%/${round.with_sluice!.p99_ms} ms (baseline ${r.baseline.p99_ms} ms)`);
  assert.deepEqual(await leftovers(ID), []);
});

test('Ctrl-C stops demo --http during a flood and still removes everything', async () => {
  const child = spawn(process.execPath, [BIN, 'demo', '--http', '--id', ID, '--duration', '3s'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  while (!out.includes('Phase 2:')) await once(child.stdout, 'data');
  await new Promise((r) => setTimeout(r, 1000)); // the abuser is flooding
  const pids: number[] = [];
  for (const ns of (await run('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]!).filter((l) => l.startsWith(`sluice-lab-${ID}-`))) {
    pids.push(...(await run('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(Boolean).map(Number));
  }
  assert.ok(pids.length >= 5, `the server, three users and the abuser run in the lab (${pids.length} processes)`);
  child.kill('SIGINT');
  const [code] = await once(child, 'exit') as [number];
  assert.equal(code, 130, out);
  assert.match(out, /Tearing down/);
  assert.match(out, /Summary \(interrupted\)/);
  assert.deepEqual(await leftovers(ID), []);
  // Nothing of the demo runs on: every process that ran in the lab is gone.
  const running = (pid: number): boolean => {
    try {
      return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 20 && pids.some(running); i++) await new Promise((r) => setTimeout(r, 100));
  const alive = pids.filter(running);
  assert.deepEqual(alive, [], 'the lab\'s processes are gone');
});
