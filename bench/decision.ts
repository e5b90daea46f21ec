/**
 * Per-packet decision cost through BPF_PROG_TEST_RUN (repeat >= 1,000,000), for each algorithm,
 * next to two baselines measured in the same run:
 *   pass   a program that returns XDP_PASS at once (the cost of the test run itself);
 *   floor  parse the same headers, read the clock once, one hash lookup (the least any per-source
 *          limiter must do).
 * Rounds are interleaved and the median of each is reported, since timings here are noisy.
 *
 *   npm run bench:decision [-- --repeat N --rounds R]
 * Writes bench/results/decision.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ObjectSpec, type Program } from '../src/ebpf';
import { encodeKey, SL_KEY_SIZE, SL_STATE_SIZE } from '../src/generated/types';
import type { AlgName } from '../src/limiter/models';
import { BENCH_OBJECT, PROD_OBJECT, REPO, TestDatapath } from '../test/lib/datapath';
import { pkt } from '../test/lib/packet';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const REPEAT = arg('repeat', 1_000_000);
const ROUNDS = arg('rounds', 5);

const SRC = '192.0.2.33';
const frame = pkt().eth().ipv4({ src: SRC, dst: '198.51.100.1' }).udp({ sport: 1234, dport: 53 }).payload(64).build();

interface Case { name: string; prog: Program }

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const bench = await ObjectSpec.open(BENCH_OBJECT).load();
  const passProg = bench.programs.get('bench_pass')!;
  const floorProg = bench.programs.get('bench_floor')!;
  // The floor's lookup hits: the frame's source is in its map.
  const fk = encodeKey({ family: 4, addr: Buffer.from([192, 0, 2, 33, ...new Array(12).fill(0)]) }, Buffer.alloc(SL_KEY_SIZE));
  bench.maps.get('floor_map')!.update(fk, Buffer.alloc(SL_STATE_SIZE));

  const cases: Case[] = [];
  const owned: TestDatapath[] = [];
  for (const alg of ['fixed', 'sliding', 'token', 'gcra'] as AlgName[]) {
    // Existing state, within the limit: the full path, including the compare-and-exchange.
    const hit = await TestDatapath.load({ object: PROD_OBJECT });
    owned.push(hit);
    hit.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: 1n << 40n, ppsBurst: 1n << 34n }] });
    cases.push({ name: `${alg}/hit-pass`, prog: hit.prog });
    // Existing state, over the limit: the path a flood takes.
    const over = await TestDatapath.load({ object: PROD_OBJECT });
    owned.push(over);
    over.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: 1 }] });
    await over.run(frame, 2);
    cases.push({ name: `${alg}/hit-drop`, prog: over.prog });
    // A new source on every run (test build with salted keys, kernel clock). The LRU (100,000) is
    // full after the first round, so this is the steady state of a flood: insert and evict.
    const fresh = await TestDatapath.load();
    owned.push(fresh);
    fresh.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: 1000 }] });
    fresh.setSalt(true);
    fresh.setNow(0n);
    cases.push({ name: `${alg}/new-source`, prog: fresh.prog });
  }

  const samples = new Map<string, number[]>();
  const add = (k: string, v: number): void => { samples.set(k, [...(samples.get(k) ?? []), v]); };
  for (let round = 0; round < ROUNDS; round++) {
    add('pass', (await passProg.run(frame, { repeat: REPEAT })).durationNs);
    add('floor', (await floorProg.run(frame, { repeat: REPEAT })).durationNs);
    for (const c of cases) {
      add(c.name, (await c.prog.run(frame, { repeat: REPEAT })).durationNs);
    }
  }
  const pass = median(samples.get('pass')!);
  const floor = median(samples.get('floor')!);
  const rows = [...cases.map((c) => c.name), 'floor'].map((name) => {
    const ns = median(samples.get(name)!);
    return {
      name,
      ns_per_packet: ns,
      baseline_pass_ns: pass,
      ratio_to_pass: +(ns / pass).toFixed(2),
      floor_ns: floor,
      ratio_to_floor: +(ns / floor).toFixed(2),
      spread_ns: [Math.min(...samples.get(name)!), Math.max(...samples.get(name)!)],
    };
  });

  console.log(`BPF_PROG_TEST_RUN, repeat ${REPEAT}, median of ${ROUNDS} interleaved rounds; pass = ${pass} ns, floor = ${floor} ns`);
  console.log('name                  ns/pkt  ratio_to_pass  ratio_to_floor  spread');
  for (const r of rows) {
    console.log(`${r.name.padEnd(20)} ${String(r.ns_per_packet).padStart(7)} ${String(r.ratio_to_pass).padStart(14)} ${String(r.ratio_to_floor).padStart(15)}  ${r.spread_ns[0]}..${r.spread_ns[1]}`);
  }
  const dir = join(REPO, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'decision.json'), JSON.stringify({
    date: new Date().toISOString(), repeat: REPEAT, rounds: ROUNDS, results: rows,
  }, null, 2) + '\n');
  console.log(`wrote ${join(dir, 'decision.json')}`);
  for (const dp of owned) dp.close();
  bench.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
