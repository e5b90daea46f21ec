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
 * states and without one. Rounds are interleaved and the median of each is reported.
 *
 *   npm run bench:decision [-- --repeat N --rounds R]
 * Writes bench/results/decision.json.
 */
import { join } from 'node:path';
import type { AlgName } from '../src/limiter/models';
import { pkt } from '../src/lab/packet';
import { BenchDatapath, interleaved, loadBaselines, TEST_OBJECT } from './lib/datapath';
import { writeResultFile } from './lib/results';

export const ALGS: AlgName[] = ['fixed', 'sliding', 'token', 'gcra'];
const SRC = [192, 0, 2, 33];
export const FRAME = pkt().eth().ipv4({ src: SRC.join('.'), dst: '198.51.100.1' }).udp({ sport: 1234, dport: 53 }).payload(64).build();
/** Within its limit for any number of runs: 2^30 packets a second, a bucket (or window) of 2^30. */
const HUGE = { pps: 1n << 30n, ppsBurst: 1n << 30n };

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

export async function runDecision(o: { repeat: number; rounds: number; log?: (s: string) => void }): Promise<{ rows: DecisionRow[]; path: string }> {
  const base = await loadBaselines(SRC);
  const owned: BenchDatapath[] = [];
  const clockOf = new Map<string, 'fine' | 'coarse' | 'none'>([['pass', 'none'], ['floor', 'fine'], ['floor-coarse', 'coarse']]);
  try {
    const cases: Parameters<typeof interleaved>[0] = [
      { name: 'pass', prog: base.pass, frame: FRAME },
      { name: 'floor', prog: base.floor, frame: FRAME },
      { name: 'floor-coarse', prog: base.floorCoarse, frame: FRAME },
    ];
    const load = async (opts: Parameters<typeof BenchDatapath.load>[0]): Promise<BenchDatapath> => {
      const dp = await BenchDatapath.load(opts);
      owned.push(dp);
      return dp;
    };
    for (const alg of ALGS) {
      for (const clock of ['coarse', 'fine'] as const) {
        const constants: Record<string, number> = clock === 'fine' ? { coarse_clock: 0 } : {};
        const suffix = clock === 'fine' ? ' (fine clock)' : '';
        // Existing state, within the limit: the full path, including the compare-and-exchange.
        const hit = await load({ constants });
        hit.limiter.applyPolicy({ rules: [{ id: 0, alg, ...HUGE }] });
        cases.push({ name: `${alg}/hit-pass${suffix}`, prog: hit.prog, frame: FRAME });
        clockOf.set(`${alg}/hit-pass${suffix}`, clock);
        // Existing state, over the limit: the path a flood takes.
        const over = await load({ constants });
        over.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: 1 }] });
        await over.prog.run(FRAME, { repeat: 2 });
        cases.push({ name: `${alg}/hit-drop${suffix}`, prog: over.prog, frame: FRAME });
        clockOf.set(`${alg}/hit-drop${suffix}`, clock);
      }
      // A new source on every run (test build, salted keys, kernel clock). The state map (100,000)
      // is full after the first round: the steady state of a flood of new sources.
      for (const cap of ['default cap', 'no cap'] as const) {
        const fresh = await load({ object: TEST_OBJECT });
        fresh.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: 1000 }] });
        if (cap === 'no cap') fresh.limiter.setConfig({ new_states_per_sec: 0xffffffff });
        fresh.setTest({ salt: true });
        const name = `${alg}/new-source (${cap})`;
        cases.push({ name, prog: fresh.prog, frame: FRAME });
        clockOf.set(name, 'coarse');
      }
    }
    o.log?.(`decision: ${cases.length} cases, ${o.rounds} interleaved rounds of ${o.repeat}`);
    const res = await interleaved(cases, { rounds: o.rounds, repeat: o.repeat });
    const pass = res.get('pass')!.ns;
    const floor = res.get('floor')!.ns;
    const floorCoarse = res.get('floor-coarse')!.ns;
    const rows: DecisionRow[] = cases.filter((c) => c.name !== 'pass').map((c) => {
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
    const path = writeResultFile('decision.json', { date: new Date().toISOString(), repeat: o.repeat, rounds: o.rounds, results: rows });
    return { rows, path };
  } finally {
    for (const dp of owned) dp.close();
    base.close();
  }
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
  runDecision({ repeat: arg('repeat', 1_000_000), rounds: arg('rounds', 5), log: (s) => console.log(s) })
    .then(({ rows, path }) => {
      printDecision(rows);
      console.log(`wrote ${join(path)}`);
    })
    .catch((e) => {
      console.error(e);
      process.exit(1);
    });
}
