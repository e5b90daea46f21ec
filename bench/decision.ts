/**
 * Per-packet decision cost through BPF_PROG_TEST_RUN (repeat >= 1,000,000), for each algorithm,
 * next to baselines measured in the same run:
 *   pass          a program that returns XDP_PASS at once (the cost of the test run itself);
 *   floor         parse the same headers, read the clock once (fine), one hash lookup: the least
 *                 any per-source limiter must do (the target: ratio_to_floor <= 1.3);
 *   floor-coarse  the same with the coarse clock, the floor for a rule that reads it.
 * Cases: an existing key within its limit (hit-pass) and over it (hit-drop), with the clock each
 * algorithm reads by default (coarse, for these rules of one second) and with the fine clock; a
 * new source on every packet (test build, salted keys, state map full) with the default cap on new
 * states and without one. Rounds are interleaved; each case is the median of its rounds, or with
 * --stat least the least (every disturbance of a shared machine only adds time to a round).
 *
 * With --baseline-objects DIR (sluice.bpf.o and sluice_test.bpf.o of another commit), every Sluice
 * case is also loaded from DIR (named base:<case>), configured through the same Limiter and run
 * next to its current twin in every round; the table gives both and the change in percent.
 *
 *   npm run bench:decision [-- --repeat N --rounds R] [--stat median|least] [--cases REGEX] [--baseline-objects DIR]
 * (--cases: only the Sluice cases whose name matches, e.g. 'new-source'; the references always run.)
 * Writes bench/results/decision.json, or with --baseline-objects bench/results/decision-compare.json.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Program } from '../src/ebpf';
import type { AlgName } from '../src/limiter/models';
import { pkt } from '../src/lab/packet';
import { BenchDatapath, interleaved, limiterMapNamesOf, limiterOf, loadBaselines, snapshotObjects, type BenchLoad, type ObjectSet, type RoundStat } from './lib/datapath';
import { machine, writeResultFile } from './lib/results';

export const ALGS: AlgName[] = ['fixed', 'sliding', 'token', 'gcra'];
const SRC = [192, 0, 2, 33];
export const FRAME = pkt().eth().ipv4({ src: SRC.join('.'), dst: '198.51.100.1' }).udp({ sport: 1234, dport: 53 }).payload(64).build();
/** Within its limit for any number of runs: 2^30 packets a second, a bucket (or window) of 2^30. */
const HUGE = { pps: 1n << 30n, ppsBurst: 1n << 30n };
/**
 * The sliding window counts at most 2^24 - 1 per window (a larger budget is refused): 6e7 a second
 * over 250 ms windows (the shortest that still reads the coarse clock), 15 million a window.
 */
const HUGE_SLIDING = { pps: 60_000_000n, windowMs: 250 };
const hugeOf = (alg: AlgName) => (alg === 'sliding' ? HUGE_SLIDING : HUGE);

export interface DecisionRow {
  name: string;
  clock: 'fine' | 'coarse' | 'none';
  ns_per_packet: number;
  baseline_pass_ns: number;
  ratio_to_pass: number;
  floor_ns: number;
  ratio_to_floor: number;
  floor_same_clock_ns: number;
  ratio_to_floor_same_clock: number;
  spread_ns: [number, number];
}

/** A case of the table: a loaded program and the clock it reads. */
interface Case {
  name: string;
  prog: Program;
  frame: Buffer;
  clock: 'fine' | 'coarse' | 'none';
}

/** Every Sluice case, loaded from one build's objects, named `${prefix}${case}`. */
async function sluiceCases(objects: ObjectSet, prefix: string, load: (o: BenchLoad) => Promise<BenchDatapath>, only?: RegExp): Promise<Case[]> {
  const cases: Case[] = [];
  const wanted = (name: string): boolean => !only || only.test(name);
  for (const alg of ALGS) {
    for (const clock of ['coarse', 'fine'] as const) {
      const constants: Record<string, number> = clock === 'fine' ? { coarse_clock: 0 } : {};
      const suffix = clock === 'fine' ? ' (fine clock)' : '';
      // Existing state, within the limit: the full path, including the compare-and-exchange.
      if (wanted(`${alg}/hit-pass${suffix}`)) {
        const hit = await load({ object: objects.prod, constants });
        hit.limiter.applyPolicy({ rules: [{ id: 0, alg, ...hugeOf(alg) }] });
        cases.push({ name: `${prefix}${alg}/hit-pass${suffix}`, prog: hit.prog, frame: FRAME, clock });
      }
      // Existing state, over the limit: the path a flood takes.
      if (wanted(`${alg}/hit-drop${suffix}`)) {
        const over = await load({ object: objects.prod, constants });
        over.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: 1 }] });
        await over.prog.run(FRAME, { repeat: 2 });
        cases.push({ name: `${prefix}${alg}/hit-drop${suffix}`, prog: over.prog, frame: FRAME, clock });
      }
    }
    // A new source on every run (test build, salted keys, kernel clock). The state map (100,000)
    // is full after the first round: the steady state of a flood of new sources.
    for (const cap of ['default cap', 'no cap'] as const) {
      if (!wanted(`${alg}/new-source (${cap})`)) continue;
      const fresh = await load({ object: objects.test });
      fresh.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: 1000 }] });
      if (cap === 'no cap') fresh.limiter.setConfig({ new_states_per_sec: 0xffffffff });
      fresh.setTest({ salt: true });
      cases.push({ name: `${prefix}${alg}/new-source (${cap})`, prog: fresh.prog, frame: FRAME, clock: 'coarse' });
    }
  }
  return cases;
}

/** The prefix of the cases loaded from --baseline-objects. */
export const BASE_PREFIX = 'base:';
/** The issue's bound: each case's ns/packet within +10% of the base commit's objects. */
export const LIMIT_PCT = 10;

export interface CompareRow {
  name: string;
  clock: 'fine' | 'coarse' | 'none';
  now_ns: number;
  baseline_ns: number;
  /** (now - baseline) / baseline, percent. */
  change_pct: number;
  within_limit: boolean;
  now_spread_ns: [number, number];
  baseline_spread_ns: [number, number];
}

export interface Comparison {
  rows: CompareRow[];
  /** pass, floor and floor-coarse of the same run (bench.bpf.o, shared by both sets). */
  reference: { pass_ns: number; floor_ns: number; floor_coarse_ns: number };
}

export async function runDecision(o: { repeat: number; rounds: number; stat?: RoundStat; only?: RegExp; log?: (s: string) => void; baselineObjects?: string }): Promise<{ rows: DecisionRow[]; path: string; compare?: Comparison }> {
  const owned: BenchDatapath[] = [];
  const sets: ObjectSet[] = [];
  let base: Awaited<ReturnType<typeof loadBaselines>> | undefined;
  try {
    // Copies: bpf/*.o may be rebuilt while the cases load.
    const now = snapshotObjects();
    sets.push(now);
    const before = o.baselineObjects === undefined ? undefined : snapshotObjects(o.baselineObjects);
    if (before) sets.push(before);
    base = await loadBaselines(SRC);
    const load = async (opts: BenchLoad): Promise<BenchDatapath> => {
      const dp = await BenchDatapath.load(opts);
      owned.push(dp);
      return dp;
    };
    const cases: Case[] = [
      { name: 'pass', prog: base.pass, frame: FRAME, clock: 'none' },
      { name: 'floor', prog: base.floor, frame: FRAME, clock: 'fine' },
      { name: 'floor-coarse', prog: base.floorCoarse, frame: FRAME, clock: 'coarse' },
    ];
    const current = await sluiceCases(now, '', load, o.only);
    // The baseline's own control plane writes its maps when the directory has one (their layouts
    // may differ from this commit's: scripts/baseline.sh).
    const baseLimiter = before ? limiterOf(before.from) : undefined;
    const baseNames = before ? limiterMapNamesOf(before.from) : undefined;
    const baseline = before ? await sluiceCases(before, BASE_PREFIX, (opts) => load({ ...opts, ...(baseLimiter ? { limiter: baseLimiter } : {}), ...(baseNames ? { mapNames: baseNames } : {}) }), o.only) : [];
    // Each case next to the same case of the baseline objects, in every round.
    current.forEach((c, i) => cases.push(...(baseline[i] ? [c, baseline[i]!] : [c])));
    const clockOf = new Map(cases.map((c) => [c.name, c.clock]));
    const stat = o.stat ?? 'median';
    o.log?.(`decision: ${cases.length} cases, ${o.rounds} interleaved rounds of ${o.repeat}, the ${stat} of each${before ? ` (baseline objects: ${before.from})` : ''}`);
    const res = await interleaved(cases, { rounds: o.rounds, repeat: o.repeat, stat });
    const pass = res.get('pass')!.ns;
    const floor = res.get('floor')!.ns;
    const floorCoarse = res.get('floor-coarse')!.ns;
    const rows: DecisionRow[] = cases.filter((c) => c.name !== 'pass' && !c.name.startsWith(BASE_PREFIX)).map((c) => {
      const { ns, spread } = res.get(c.name)!;
      const clock = clockOf.get(c.name)!;
      const same = clock === 'coarse' ? floorCoarse : floor;
      return {
        name: c.name,
        clock,
        ns_per_packet: ns,
        baseline_pass_ns: pass,
        ratio_to_pass: +(ns / pass).toFixed(2),
        floor_ns: floor,
        ratio_to_floor: +(ns / floor).toFixed(2),
        floor_same_clock_ns: same,
        ratio_to_floor_same_clock: +(ns / same).toFixed(2),
        spread_ns: spread,
      };
    });
    if (!before) {
      // A subset of the cases (--cases) is printed, never written over the whole table's file.
      const path = o.only ? '(not written: --cases)' : writeResultFile('decision.json', { date: new Date().toISOString(), machine: machine(), repeat: o.repeat, rounds: o.rounds, stat, results: rows });
      return { rows, path };
    }
    const compareRows: CompareRow[] = current.map((c) => {
      const a = res.get(c.name)!;
      const b = res.get(`${BASE_PREFIX}${c.name}`)!;
      const change = +((100 * (a.ns - b.ns)) / b.ns).toFixed(1);
      return {
        name: c.name,
        clock: c.clock,
        now_ns: a.ns,
        baseline_ns: b.ns,
        change_pct: change,
        within_limit: change <= LIMIT_PCT,
        now_spread_ns: a.spread,
        baseline_spread_ns: b.spread,
      };
    });
    const only = (x: string[], y: string[]): string[] => x.filter((m) => !y.includes(m));
    const describe = (s: ObjectSet, other: ObjectSet) => ({
      from: s.from,
      ...(existsSync(join(s.from, 'COMMIT')) ? { commit: readFileSync(join(s.from, 'COMMIT'), 'utf8').trim() } : {}),
      sha256: s.sha256,
      maps_not_in_other: { prod: only(s.maps.prod, other.maps.prod), test: only(s.maps.test, other.maps.test) },
    });
    const compare: Comparison = { rows: compareRows, reference: { pass_ns: pass, floor_ns: floor, floor_coarse_ns: floorCoarse } };
    const path = o.only ? '(not written: --cases)' : writeResultFile('decision-compare.json', {
      date: new Date().toISOString(),
      machine: machine(),
      repeat: o.repeat,
      rounds: o.rounds,
      stat,
      limit_pct: LIMIT_PCT,
      objects: { now: describe(now, before), baseline: describe(before, now) },
      reference: compare.reference,
      within_limit: `${compareRows.filter((r) => r.within_limit).length} of ${compareRows.length}`,
      results: compareRows,
    });
    return { rows, path, compare };
  } finally {
    for (const dp of owned) dp.close();
    base?.close();
    for (const s of sets) s.cleanup();
  }
}

export function printCompare(c: Comparison): void {
  const r0 = c.reference;
  console.log(`reference (same run): pass ${r0.pass_ns} ns, floor ${r0.floor_ns} ns, floor-coarse ${r0.floor_coarse_ns} ns`);
  console.log(`name                                  clock   now ns  base ns  change  spread now  spread base`);
  for (const r of c.rows) {
    const change = `${r.change_pct > 0 ? '+' : ''}${r.change_pct.toFixed(1)}%`;
    console.log(`${r.name.padEnd(37)} ${r.clock.padEnd(6)} ${String(r.now_ns).padStart(7)} ${String(r.baseline_ns).padStart(8)} ${change.padStart(7)}${r.within_limit ? ' ' : '!'} ${`${r.now_spread_ns[0]}..${r.now_spread_ns[1]}`.padStart(10)}  ${`${r.baseline_spread_ns[0]}..${r.baseline_spread_ns[1]}`.padStart(11)}`);
  }
  const over = c.rows.filter((r) => !r.within_limit);
  console.log(`${c.rows.length - over.length} of ${c.rows.length} cases within +${LIMIT_PCT}% of the baseline objects${over.length ? ` (over, marked !: ${over.map((r) => r.name).join(', ')})` : ''}`);
}

export function printDecision(rows: DecisionRow[]): void {
  console.log('name                                  clock   ns/pkt  x floor  x floor (same clock)  spread');
  for (const r of rows) {
    console.log(`${r.name.padEnd(37)} ${r.clock.padEnd(6)} ${String(r.ns_per_packet).padStart(7)} ${String(r.ratio_to_floor).padStart(8)} ${String(r.ratio_to_floor_same_clock).padStart(21)}  ${r.spread_ns[0]}..${r.spread_ns[1]}`);
  }
}

if (require.main === module) {
  const arg = (name: string, dflt: number): number => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? Number(process.argv[i + 1]) : dflt;
  };
  const bi = process.argv.indexOf('--baseline-objects');
  const baselineObjects = bi > 0 ? process.argv[bi + 1] : undefined;
  if (bi > 0 && !baselineObjects) {
    console.error('--baseline-objects needs a directory (holding sluice.bpf.o and sluice_test.bpf.o)');
    process.exit(2);
  }
  if (process.argv.includes('--help')) {
    console.log('npm run bench:decision [-- --repeat N] [--rounds R] [--stat median|least] [--cases REGEX] [--baseline-objects DIR]');
    process.exit(0);
  }
  const si = process.argv.indexOf('--stat');
  const stat = si > 0 ? process.argv[si + 1] : 'median';
  if (stat !== 'median' && stat !== 'least') {
    console.error(`--stat is median or least, got ${stat ?? 'nothing'}`);
    process.exit(2);
  }
  const ci = process.argv.indexOf('--cases');
  const only = ci > 0 ? new RegExp(process.argv[ci + 1] ?? '') : undefined;
  runDecision({ repeat: arg('repeat', 1_000_000), rounds: arg('rounds', 5), stat, ...(only ? { only } : {}), log: (s) => console.log(s), ...(baselineObjects ? { baselineObjects: resolve(baselineObjects) } : {}) })
    .then(({ rows, path, compare }) => {
      if (compare) printCompare(compare);
      else printDecision(rows);
      console.log(path.startsWith('(') ? path : `wrote ${join(path)}`);
    })
    .catch((e) => {
      console.error(e);
      process.exit(1);
    });
}
