/**
 * `npm run bench`: Sluice side by side with the bare XDP ceiling, the stack, a minimal XDP limiter,
 * nftables, iptables and a Node.js limiter, on this machine, in one run; then the data path's
 * per-packet cost, scale, clock and spoofed-flood figures, the control plane's, and accuracy under
 * load.
 *
 *   npm run bench                  everything (about 20 minutes)
 *   npm run bench -- --quick       the throughput table only, shorter windows (under two minutes)
 *   npm run bench -- --only throughput,decision,memory,scale,cpus,clock,spoof,control,accuracy,egress
 *   npm run bench -- --report      rewrite docs/benchmarks.md's tables from bench/results only
 *
 * Needs root. Installs nftables and iptables when missing. Everything it creates carries this
 * run's id (the lab's namespaces, the nftables table, the iptables chain, the pins of the control
 * plane's protection) and lives inside the run's own lab namespaces, which are removed at the
 * end, on an error, and on Ctrl-C or SIGTERM. Traffic never leaves them: they have no route out,
 * and no host interface is touched.
 * Writes bench/results/*.json and the generated parts of docs/benchmarks.md (and its chart).
 */
import { accuracyRun, type AccuracyRow } from './lib/accuracy';
import { EGRESS_LIMIT, egressBench } from './lib/egress';
import { daemonMemory, setToEnforcement, swapPolicy, topOverMillion } from './lib/control';
import { runDecision, printDecision, ALGS } from './decision';
import { installPeers, peerVersions } from './lib/peers';
import { writeReport } from './lib/report';
import { machine, writeResultFile } from './lib/results';
import { cpusFigures, cpusRuns, VARIANTS } from './lib/cpus';
import { BIG_MAP, cidrPerPacket, sequenceShape, sourcesConfig, sourcesPerPacket, stateMemory } from './lib/scale';
import { benchId, openTestbed, pinSelf, type Testbed } from './lib/site';
import {
  CONFIGS, figures, LIMIT, measure, minimalCoarse, SHAPES, SPOOF_AGGREGATE_PPS, startSluice,
  type ConfigDef, type RunResult, type Shape,
} from './lib/throughput';

/** CPU 1 busier than this during a window: someone else was running (this process alone stays far below). */
const DISTURBED_CPU1 = 0.3;

const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const listArg = (name: string): Set<string> | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? new Set(args[i + 1]!.split(',')) : undefined;
};
const ONLY = listArg('only');
const REPORT_ONLY = args.includes('--report');
const wants = (section: string): boolean => !REPORT_ONLY && (ONLY ? ONLY.has(section) : QUICK ? section === 'throughput' : true);
/** Development aids: a subset of the throughput table (null and ceiling always run), the rounds. */
const CONFIG_FILTER = listArg('configs');
const SHAPE_FILTER = listArg('shapes');
const ROUNDS = Number(listArg('rounds')?.values().next().value ?? 0);

const log = (s: string): void => {
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
};
const mpps = (x: number): string => (x / 1e6).toFixed(2);

const WINDOW = { warmS: QUICK ? 0.3 : 0.5, windowS: QUICK ? 0.6 : 2.5 };
/** Attempts at a run disturbed by another process (fewer in a quick run, which must stay short). */
const ATTEMPTS = QUICK ? 2 : 3;

/**
 * Measure each (configuration, shape) of `plan`, `rounds` times, interleaved. The machine may be
 * shared: a run during which CPU 1 (where only this process's sampling runs) was busy is taken
 * again (up to ATTEMPTS times), and the last attempt is kept, marked as disturbed.
 */
async function table(tb: Testbed, plan: { cfg: ConfigDef; shape: Shape }[], rounds: number, signal: AbortSignal, w = WINDOW): Promise<RunResult[]> {
  const runs: RunResult[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const { cfg, shape } of plan) {
      let r: RunResult | undefined;
      for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
        if (signal.aborted) throw new Error('interrupted');
        r = await measure(tb.site, cfg, shape, { round, ...w, signal });
        log(`  ${round} ${cfg.name.padEnd(16)} ${shape.name.padEnd(8)} offered ${mpps(r.offered_pps)} Mpps, decided ${mpps(r.e2e_pps)} Mpps e2e, ` +
          `cpu0 ${(r.cpu0.busy * 100).toFixed(0)}% (si ${(r.cpu0.softirq * 100).toFixed(0)}%, user ${(r.cpu0.user * 100).toFixed(0)}%), cpu1 ${(r.cpu1_busy * 100).toFixed(0)}%, ${r.busy_ns_per_frame.toFixed(1)} ns/frame`);
        if (r.cpu1_busy <= DISTURBED_CPU1) break;
        r.disturbed = true;
        log('    CPU 1 was busy: another process ran during the window; measuring again');
      }
      runs.push(r!);
    }
  }
  return runs;
}

const NULL = CONFIGS.find((c) => c.name === 'null')!;
const CEILING = CONFIGS.find((c) => c.name === 'ceiling')!;
const MODES = new Map(CONFIGS.map((c) => [c.name, c.kind === 'netfilter' ? (c.name === 'nftables' ? 'netdev ingress' : 'raw PREROUTING') : c.kind === 'user' ? 'user space' : 'native XDP']));
const genCost = (runs: RunResult[], shapes: string[]): Record<string, number[]> =>
  Object.fromEntries(shapes.map((s) => [s, runs.filter((r) => r.config === 'null' && r.shape === s).map((r) => +r.busy_ns_per_frame.toFixed(1))]));

async function throughput(tb: Testbed, signal: AbortSignal): Promise<void> {
  const rounds = ROUNDS || (QUICK ? 2 : 3);
  const plan = CONFIGS.filter((c) => !CONFIG_FILTER || CONFIG_FILTER.has(c.name) || c.name === 'null' || c.name === 'ceiling')
    .flatMap((cfg) => SHAPES.filter((s) => cfg.shapes.includes(s.name) && (!SHAPE_FILTER || SHAPE_FILTER.has(s.name))).map((shape) => ({ cfg, shape })));
  log(`throughput: ${plan.length} configurations x ${rounds} rounds, ${WINDOW.windowS} s windows`);
  const runs = await table(tb, plan, rounds, signal);
  const figs = figures(runs, CONFIGS, MODES);
  const path = writeResultFile('throughput.json', {
    date: new Date().toISOString(),
    quick: QUICK,
    machine: machine(),
    versions: await peerVersions(),
    method: 'sender and receiver on CPU 0 (two generator threads back to back, NAPI in the same CPU\'s softirq); ' +
      'decided_pps = packets decided per second of CPU 0 time not spent by the generator (t_gen from the null run of the same shape and round); ' +
      'e2e_pps = decided per second of wall time, generator included; ratio_to_ceiling = decided_pps / the ceiling\'s, same shape and round',
    limit: { ...LIMIT, spoof_aggregate_pps: SPOOF_AGGREGATE_PPS },
    window_s: WINDOW.windowS,
    rounds,
    generator_ns_per_frame: genCost(runs, SHAPES.map((s) => s.name)),
    results: figs,
    raw: runs.map((r) => ({ ...r, busy_ns_per_frame: +r.busy_ns_per_frame.toFixed(2) })),
  });
  log(`wrote ${path}`);
  for (const f of figs) {
    log(`${f.name.padEnd(14)} ${f.shape.padEnd(6)} decided ${mpps(f.decided_pps)} Mpps (${f.spread.decided_pps.map(mpps).join('..')}), ratio ${f.ratio_to_ceiling}, e2e ${mpps(f.e2e_pps)} Mpps, passed ${(f.passed_share * 100).toFixed(2)}%`);
  }
}

async function decision(): Promise<void> {
  const { rows, path } = await runDecision({ repeat: 1_000_000, rounds: 7, log });
  printDecision(rows);
  log(`wrote ${path}`);
}

/** The kernel's account of the state maps' memory (memlock), at 100,000 and 1,000,000 entries. */
async function memory(): Promise<void> {
  const rows = await stateMemory([100_000, 1_000_000]);
  for (const r of rows) log(`${r.map} (key ${r.key_bytes} B, value ${r.value_bytes} B), ${r.max_entries} entries: ${(r.bytes / 1e6).toFixed(1)} MB, ${r.mb_per_100k} MB per 100,000`);
  log(`wrote ${writeResultFile('memory.json', { date: new Date().toISOString(), machine: machine(), state_memory: rows })}`);
}

/** A configuration for a section of its own, over the given shapes. */
const adHoc = (name: string, title: string, start: ConfigDef['start']): ConfigDef => ({ name, title, kind: 'xdp', shapes: [], start });

async function scale(tb: Testbed, signal: AbortSignal): Promise<void> {
  const o = { repeat: 1_000_000, rounds: 5 };
  log('scale: per-packet cost over 1, 10,000 and 1,000,000 tracked sources');
  const sources = await sourcesPerPacket([1, 10_000, 1_000_000], o);
  log('scale: per-packet cost over 1 .. 100,000 source-CIDR entries');
  const cidr = await cidrPerPacket([1, 100, 10_000, 100_000], o);
  const memory = await stateMemory([100_000, 1_000_000]);
  // Throughput: every source over its limit after its first packet (a hit and a drop each), so that
  // nothing passes into the stack; the warm-up lets every one of a million sources be seen twice.
  const counts = [1, 1000, 10_000, 1_000_000];
  const shapes = counts.map(sequenceShape);
  const cfg = sourcesConfig();
  // The minimal limiter with a map that holds every source (BIG_MAP, as Sluice's here), dropping
  // every packet after a source's first: the same work per packet, one lookup and no more.
  const minimal = minimalCoarse('minimal-coarse-big', BIG_MAP, 0);
  const plan = shapes.flatMap((shape) => [{ cfg: NULL, shape }, { cfg, shape }, { cfg: minimal, shape }]);
  log('scale: throughput over 1 .. 1,000,000 sources');
  const runs = await table(tb, plan, 2, signal, { warmS: 2.5, windowS: WINDOW.windowS });
  const cidrCounts = [1, 1000, 100_000];
  const cidrShape = sequenceShape(1000);
  const cidrPlan = [{ cfg: NULL, shape: cidrShape }, ...cidrCounts.map((n) => ({ cfg: sourcesConfig(n), shape: cidrShape }))];
  log('scale: throughput over 1 .. 100,000 source-CIDR entries (1,000 sources)');
  const cidrRuns = await table(tb, cidrPlan, 2, signal, { warmS: 1.5, windowS: WINDOW.windowS });
  const defs = [NULL, { ...cfg, shapes: shapes.map((s) => s.name) }, { ...minimal, shapes: shapes.map((s) => s.name) }, ...cidrCounts.map((n) => ({ ...sourcesConfig(n), shapes: [cidrShape.name] }))];
  const figs = figures([...runs, ...cidrRuns], defs, new Map(defs.map((d) => [d.name, 'native XDP'])));
  const at = (name: string, shape: string): number => figs.find((f) => f.name === name && f.shape === shape)?.decided_pps ?? NaN;
  const path = writeResultFile('scale.json', {
    date: new Date().toISOString(),
    machine: machine(),
    per_packet: { sources, cidr },
    state_memory: memory,
    throughput: {
      sources: counts.map((n) => ({
        n, decided_pps: at(cfg.name, `seq${n}`), ratio_to_1000: +(at(cfg.name, `seq${n}`) / at(cfg.name, 'seq1000')).toFixed(3),
        minimal_pps: at(minimal.name, `seq${n}`), ratio_to_minimal: +(at(cfg.name, `seq${n}`) / at(minimal.name, `seq${n}`)).toFixed(3),
      })),
      cidr: cidrCounts.map((n) => ({ n, decided_pps: at(`sluice-cidr-${n}`, cidrShape.name), ratio_to_first: +(at(`sluice-cidr-${n}`, cidrShape.name) / at('sluice-cidr-1', cidrShape.name)).toFixed(3) })),
      figures: figs,
    },
    raw: [...runs, ...cidrRuns],
  });
  log(`wrote ${path}`);
}

/** Two receiving CPUs against one (bench/lib/cpus.ts): Sluice's scaling against the ceiling's. */
async function cpus(tb: Testbed, signal: AbortSignal): Promise<void> {
  const rounds = ROUNDS || (QUICK ? 1 : 3);
  log(`cpus: one receiving CPU and two, ${rounds} rounds, ${WINDOW.windowS} s windows`);
  const runs = await cpusRuns(tb.site, { rounds, ...WINDOW, signal, log });
  const figs = cpusFigures(runs);
  const path = writeResultFile('cpus.json', {
    date: new Date().toISOString(),
    machine: machine(),
    method: 'decided packets per CPU-second of the generator\'s CPUs, the generator\'s own cost (null run, same CPUs and round) subtracted; ' +
      'scaling = two CPUs / one CPU; scaling_vs_ceiling = scaling / the ceiling\'s (XDP_DROP) of the same shape and round',
    variants: VARIANTS,
    window_s: WINDOW.windowS,
    rounds,
    results: figs,
    raw: runs,
  });
  for (const f of figs) log(`${f.config.padEnd(18)} ${f.shape.padEnd(13)} one CPU ${mpps(f.one_cpu_pps)} Mpps, two ${mpps(f.two_cpu_pps)} Mpps: x${f.scaling}, ${f.scaling_vs_ceiling} of the ceiling's scaling`);
  log(`wrote ${path}`);
}

async function clock(tb: Testbed, signal: AbortSignal): Promise<void> {
  const one = SHAPES.find((s) => s.name === 'one')!;
  const cfgs = ALGS.flatMap((alg) => (['coarse', 'fine'] as const).map((c) =>
    adHoc(`sluice-${alg}-${c}`, `Sluice, ${alg}, ${c} clock`, (site, shape) => startSluice(site, alg, shape, c === 'fine' ? { constants: { coarse_clock: 0 } } : {}))));
  const plan = [{ cfg: NULL, shape: one }, { cfg: CEILING, shape: one }, ...cfgs.map((cfg) => ({ cfg, shape: one }))];
  log('clock: throughput with the coarse and the fine clock (one source over its limit)');
  const runs = await table(tb, plan, 2, signal);
  const defs = [NULL, { ...CEILING }, ...cfgs.map((c) => ({ ...c, shapes: ['one'] }))];
  const figs = figures(runs, defs, new Map(defs.map((d) => [d.name, 'native XDP'])));
  const accuracy: AccuracyRow[] = [];
  for (const alg of ALGS) {
    for (const c of ['coarse', 'fine'] as const) accuracy.push(await accuracyRun(tb.site, alg, c, 1, 10_000, { windowS: 2, signal }));
  }
  const path = writeResultFile('clock.json', { date: new Date().toISOString(), machine: machine(), throughput: figs, accuracy, raw: runs });
  log(`wrote ${path}`);
}

async function spoof(tb: Testbed, signal: AbortSignal): Promise<void> {
  const shape = SHAPES.find((s) => s.name === 'spoof')!;
  const variants: { name: string; title: string; newStatesPerSec?: number; aggregatePps: number }[] = [
    { name: 'agg100k-cap', title: 'aggregate 100,000 pps, cap on new states (default)', aggregatePps: SPOOF_AGGREGATE_PPS },
    { name: 'agg100k-nocap', title: 'aggregate 100,000 pps, no cap on new states', aggregatePps: SPOOF_AGGREGATE_PPS, newStatesPerSec: 0xffffffff },
    { name: 'agg1m-cap', title: 'aggregate 1,000,000 pps, cap on new states (default)', aggregatePps: 1_000_000 },
    { name: 'agg1m-nocap', title: 'aggregate 1,000,000 pps, no cap on new states', aggregatePps: 1_000_000, newStatesPerSec: 0xffffffff },
    { name: 'aggdefault-cap', title: 'default aggregate (16,384 x 100 pps), cap on new states (default)', aggregatePps: 0 },
    { name: 'aggdefault-nocap', title: 'default aggregate (16,384 x 100 pps), no cap on new states', aggregatePps: 0, newStatesPerSec: 0xffffffff },
  ];
  const cfgs = variants.map((v) => adHoc(`sluice-token-${v.name}`, `Sluice, token, ${v.title}`, (site, s) =>
    startSluice(site, 'token', s, { aggregatePps: v.aggregatePps, ...(v.newStatesPerSec !== undefined ? { newStatesPerSec: v.newStatesPerSec } : {}) })));
  const plan = [{ cfg: NULL, shape }, { cfg: CEILING, shape }, ...cfgs.map((cfg) => ({ cfg, shape }))];
  log('spoof: Sluice under a flood of spoofed sources, with and without the cap on new states');
  const runs = await table(tb, plan, 2, signal);
  const defs = [NULL, CEILING, ...cfgs.map((c) => ({ ...c, shapes: ['spoof'] }))];
  const figs = figures(runs, defs, new Map(defs.map((d) => [d.name, 'native XDP'])));
  const path = writeResultFile('spoof.json', { date: new Date().toISOString(), machine: machine(), variants, results: figs, raw: runs });
  log(`wrote ${path}`);
}

async function control(tb: Testbed, signal: AbortSignal): Promise<void> {
  log('control: sluice top over 1,000,000 entries');
  const top = await topOverMillion(tb.site, { runs: 3, log, signal });
  log('control: sluice set to enforcement');
  const set = await setToEnforcement(tb.site, { runs: 5, signal });
  log('control: swapping a 10,000-rule policy');
  const swap = await swapPolicy({ rules: 10_000, runs: 6 });
  log('control: the daemon\'s resident memory');
  const daemon = await daemonMemory(tb.site, { signal });
  const path = writeResultFile('control.json', { date: new Date().toISOString(), machine: machine(), top, set, swap, daemon });
  log(`wrote ${path}`);
}

async function accuracy(tb: Testbed, signal: AbortSignal): Promise<void> {
  log('accuracy: passes against the algorithm at full offered load');
  const rows: AccuracyRow[] = [];
  for (const alg of ALGS) {
    rows.push(await accuracyRun(tb.site, alg, 'coarse', 1, 10_000, { windowS: 3, signal }));
    rows.push(await accuracyRun(tb.site, alg, 'coarse', 1000, 100, { windowS: 3, signal }));
    log(`  ${alg}: ${rows.slice(-2).map((r) => `${r.sources} source(s): passed ${r.passed}, expected ${r.expected} (${(r.error * 100).toFixed(2)}%) at ${mpps(r.offered_pps)} Mpps offered`).join('; ')}`);
  }
  const path = writeResultFile('accuracy.json', { date: new Date().toISOString(), machine: machine(), results: rows });
  log(`wrote ${path}`);
}

async function egress(id: string): Promise<void> {
  log('egress: TCP through the tc program, unclaimed and under a byte limit (sender and receiver on both CPUs)');
  await pinSelf('0,1'); // the transfer's processes inherit this process's CPUs
  try {
    const r = await egressBench(`${id}e`, { rounds: 5, seconds: 2, log });
    const path = writeResultFile('egress.json', { date: new Date().toISOString(), machine: machine(), limit: EGRESS_LIMIT, ...r });
    log(`egress: no rule claiming TCP ${(r.unclaimed_ratio_median * 100).toFixed(0)}% of nothing attached (median of ${r.rounds} rounds: ${r.unclaimed_ratio.join(', ')}); TCP at 1 MB/s: ${(r.limited_share_median * 100).toFixed(0)}% of the limit; the tc program: ${r.unclaimed_prog.ns_per_skb} ns per skb, ${(r.unclaimed_prog.cpu_share * 100).toFixed(2)}% of a CPU; wrote ${path}`);
  } finally {
    await pinSelf(1);
  }
}

async function main(): Promise<void> {
  if (REPORT_ONLY) {
    log(`wrote ${writeReport()}`);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('npm run bench needs root (BPF, network namespaces, netfilter)');
  const ac = new AbortController();
  const onSignal = (sig: string): void => {
    log(`${sig}: stopping, cleaning up`);
    ac.abort();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));

  await pinSelf(1);
  if (wants('throughput')) await installPeers(log);
  if (wants('decision')) await decision();
  if (wants('memory')) await memory();
  const id = benchId();
  let tb: Testbed | undefined;
  try {
    tb = await openTestbed(id, log);
    if (wants('throughput')) await throughput(tb, ac.signal);
    if (wants('scale')) await scale(tb, ac.signal);
    if (wants('cpus')) await cpus(tb, ac.signal);
    if (wants('clock')) await clock(tb, ac.signal);
    if (wants('spoof')) await spoof(tb, ac.signal);
    if (wants('accuracy')) await accuracy(tb, ac.signal);
    if (wants('control')) await control(tb, ac.signal);
    if (wants('egress')) await egress(id);
  } finally {
    await tb?.close();
    log(`testbed ${id} removed`);
  }
  log(`wrote ${writeReport()}`);
  if (ac.signal.aborted) process.exitCode = 130;
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exitCode = process.exitCode || 1;
});
