/**
 * Two receiving CPUs (issue 13, step 5): does Sluice's capacity grow with the CPUs as much as a
 * program that keeps no state does?
 *
 * The lab's server veth has two receive queues; a generator thread on each CPU redirects its
 * frames into the client's veth, and the server end's NAPI runs in the softirq of the CPU that
 * sent them. So "one CPU" is two generator threads on CPU 0 (the throughput table's method) and
 * "two CPUs" one thread on CPU 0 and one on CPU 1. Per configuration and variant, in one run:
 *
 *   capacity = decided / (busy seconds of the generator's CPUs - frames sent x t_gen)
 *
 * with t_gen the generator's own busy time per frame on the same CPUs (the null run of the same
 * variant and round: the receiving veth has no NAPI there, every frame is dropped at transmit).
 * The figure of merit is scaling = capacity(two CPUs) / capacity(one CPU), for Sluice against the
 * ceiling (XDP_DROP, no state) of the same round.
 *
 * Shapes: per-source keys with each CPU sending its own 1,000 sources (as receive-side scaling
 * gives each CPU its own flows), the same 1,000 sources from both CPUs (every state entry written
 * by both: the worst case for per-source state), and one bucket for the whole rule (`per: rule`).
 */
import { median } from './datapath';
import { CONFIGS, measure, startSluice, type ConfigDef, type RunResult, type Shape, type Site } from './throughput';

export const VARIANTS = [
  { name: 'one', title: 'one CPU (two generator threads on CPU 0)', cpus: [0, 0] },
  { name: 'two', title: 'two CPUs (a generator thread on each)', cpus: [0, 1] },
] as const;

const own: Shape = { name: 'k1000-own', title: '1,000 sources per CPU, each CPU its own', flood: { sources: 1000, sourcesPerCpu: true } };
const shared: Shape = { name: 'k1000-shared', title: 'the same 1,000 sources from both CPUs', flood: { sources: 1000 } };

export interface CpusCase { cfg: ConfigDef; shape: Shape; baseline: string }

const NULL = CONFIGS.find((c) => c.name === 'null')!;
const CEILING = CONFIGS.find((c) => c.name === 'ceiling')!;
const sluice = (name: string, title: string, key?: 'rule'): ConfigDef => ({
  name, title, kind: 'xdp', shapes: [], start: (site, shape) => startSluice(site, 'token', shape, key ? { key } : {}),
});

/** Every run of a round: (configuration, shape), the null and ceiling runs of each shape first. */
export const CPUS_PLAN: { cfg: ConfigDef; shape: Shape }[] = [
  { cfg: NULL, shape: own }, { cfg: CEILING, shape: own },
  { cfg: sluice('sluice-token', 'Sluice, token, per source'), shape: own },
  { cfg: sluice('sluice-token-rule', 'Sluice, token, one bucket for the rule (per: rule)', 'rule'), shape: own },
  { cfg: NULL, shape: shared }, { cfg: CEILING, shape: shared },
  { cfg: sluice('sluice-token', 'Sluice, token, per source'), shape: shared },
];

export interface CpusFigure {
  config: string;
  title: string;
  shape: string;
  /** Median over rounds of packets decided per CPU-second, per variant. */
  one_cpu_pps: number;
  two_cpu_pps: number;
  /** two / one, median over rounds of each round's own ratio. */
  scaling: number;
  /** This configuration's scaling over the ceiling's of the same shape and round (median). */
  scaling_vs_ceiling: number;
  rounds: { one_cpu_pps: number; two_cpu_pps: number; scaling: number; scaling_vs_ceiling: number }[];
}

type CpusRun = RunResult & { variant: string };

/**
 * Measure the plan `rounds` times; each (configuration, shape) on one CPU and then on two, back to
 * back, so that a change of the machine's speed over the run moves both figures of a ratio alike.
 */
export async function cpusRuns(site: Site, o: { rounds: number; warmS: number; windowS: number; signal: AbortSignal; log: (s: string) => void }): Promise<CpusRun[]> {
  const runs: CpusRun[] = [];
  for (let round = 0; round < o.rounds; round++) {
    for (const { cfg, shape } of CPUS_PLAN) {
      for (const v of VARIANTS) {
        if (o.signal.aborted) throw new Error('interrupted');
        const r = await measure(site, cfg, shape, { round, warmS: o.warmS, windowS: o.windowS, signal: o.signal, cpus: [...v.cpus] });
        runs.push({ ...r, variant: v.name });
        o.log(`  ${round} ${v.name} ${cfg.name.padEnd(18)} ${shape.name.padEnd(13)} sent ${(r.sent / r.seconds / 1e6).toFixed(2)} Mpps, decided ${(r.decided / r.seconds / 1e6).toFixed(2)} Mpps, ` +
          `busy ${(r.busy_s / r.seconds).toFixed(2)} CPU`);
      }
    }
  }
  return runs;
}

export function cpusFigures(runs: CpusRun[]): CpusFigure[] {
  const find = (config: string, shape: string, variant: string, round: number): CpusRun | undefined =>
    runs.find((r) => r.config === config && r.shape === shape && r.variant === variant && r.round === round);
  const capacity = (r: CpusRun): number => {
    const gen = find('null', r.shape, r.variant, r.round);
    const tGen = gen ? gen.busy_s / Math.max(1, gen.sent) : 0;
    const serverS = r.busy_s - r.sent * tGen;
    return serverS > 0 ? r.decided / serverS : 0;
  };
  const out: CpusFigure[] = [];
  const seen = new Set<string>();
  for (const { cfg, shape } of CPUS_PLAN) {
    if (cfg.name === 'null' || seen.has(`${cfg.name}/${shape.name}`)) continue;
    seen.add(`${cfg.name}/${shape.name}`);
    const rounds = [...new Set(runs.map((r) => r.round))].flatMap((round) => {
      const one = find(cfg.name, shape.name, 'one', round);
      const two = find(cfg.name, shape.name, 'two', round);
      const c1 = find('ceiling', shape.name, 'one', round);
      const c2 = find('ceiling', shape.name, 'two', round);
      if (!one || !two || !c1 || !c2) return [];
      // Other work on the machine counts as busy time too; a round where that left no server time
      // for one of the four runs has no figure (it is left out, and the raw runs keep it).
      if (![one, two, c1, c2].every((r) => capacity(r) > 0)) return [];
      const scaling = capacity(two) / capacity(one);
      const ceil = capacity(c2) / capacity(c1);
      return [{ one_cpu_pps: Math.round(capacity(one)), two_cpu_pps: Math.round(capacity(two)), scaling: +scaling.toFixed(3), scaling_vs_ceiling: +(scaling / ceil).toFixed(3) }];
    });
    if (!rounds.length) continue;
    out.push({
      config: cfg.name,
      title: cfg.title,
      shape: shape.name,
      one_cpu_pps: Math.round(median(rounds.map((r) => r.one_cpu_pps))),
      two_cpu_pps: Math.round(median(rounds.map((r) => r.two_cpu_pps))),
      scaling: +median(rounds.map((r) => r.scaling)).toFixed(3),
      scaling_vs_ceiling: +median(rounds.map((r) => r.scaling_vs_ceiling)).toFixed(3),
      rounds,
    });
  }
  return out;
}
