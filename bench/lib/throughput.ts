/**
 * Throughput side by side: the lab's generator at full speed into the server's veth, and what
 * each configuration decides per second on the receiving side.
 *
 * Method (docs/benchmarks.md, "Method"): sender and receiver share one CPU (CPU 0). Two generator
 * threads run back to back on it (so that one thread's set-up of a live-frame run never leaves the
 * CPU idle), and the receiving veth's NAPI runs in the softirq of the same CPU. A run samples, over
 * a window in the middle of the flood: frames sent, packets the configuration decided, and the CPU
 * time of CPU 0 (/proc/stat). The sender's own cost per frame (t_gen) comes from the "null" run of
 * the same shape and round, where the receiving veth has no NAPI and every frame is dropped at
 * transmit; the receiver's capacity is then
 *
 *   decided / (busy seconds of CPU 0 - frames sent x t_gen)
 *
 * i.e. packets decided per second of the server's CPU. The bench process itself runs on CPU 1.
 */
import { Link, ObjectSpec, type Collection } from '../../src/ebpf';
import { setGro } from '../../src/ebpf/lab';
import { flood, type FloodOptions, type FloodTarget } from '../../src/lab';
import type { AlgName } from '../../src/limiter/models';
import { cpuUse, sampleCpus, type CpuSample } from './cpu';
import { BENCH_OBJECT, BenchDatapath, median } from './datapath';
import { startIptables, startNft, startNodeLimiter, type Decider, type PeerLimit } from './peers';

export const RX_CPU = 0;
/** Where the UDP sink listens (every configuration but the Node.js limiter). */
export const SINK_PORT = 9;
export const NODE_PORT = 5353;
/** Every limiter: 100 packets per second per source, burst 100, 100,000 sources tracked. */
export const LIMIT: PeerLimit = { pps: 100, burst: 100, tableSize: 100_000 };
/** Sluice's aggregate for the spoofed flood: without one, each spoofed packet is within its new
 *  source's limit. Per rule; each CPU enforces its share. */
export const SPOOF_AGGREGATE_PPS = 100_000;

/** The table's shapes are 'one', 'k1000' and 'spoof'; other sections name their own. */
export type ShapeName = string;
export interface Shape {
  name: ShapeName;
  title: string;
  flood: Pick<FloodOptions, 'sources' | 'spoof' | 'spoofPrefix4' | 'sourcesPerCpu'>;
}
export const SHAPES: Shape[] = [
  { name: 'one', title: 'one source far over its limit', flood: { sources: 1 } },
  { name: 'k1000', title: '1,000 sources', flood: { sources: 1000 } },
  { name: 'spoof', title: 'a new random source on every packet', flood: { spoof: 'random', spoofPrefix4: '10.0.0.0/8' } },
];

/** Where the flood goes: the lab's server veth. */
export interface Site {
  target: FloodTarget;
  ns: string;
  dev: string;
  id: string;
}

export interface ConfigDef {
  name: string;
  /** What it is, for the report. */
  title: string;
  kind: 'null' | 'xdp' | 'netfilter' | 'user';
  shapes: ShapeName[];
  /** The flood's destination port (the Node.js limiter listens on its own). */
  dport?: number;
  start(site: Site, shape: Shape): Promise<Decider & { mode?: string }>;
}

/** bench.bpf.o's program `prog` attached natively; counts in bench_count. */
/** Entries of the minimal limiters' map: every source of a run (a spoofed flood's are too many). */
const MINIMAL_ENTRIES = 1 << 17;

async function benchProgram(site: Site, prog: string, consts: Record<string, number> = {}, entries = MINIMAL_ENTRIES): Promise<Decider & { mode: string }> {
  const spec = ObjectSpec.open(BENCH_OBJECT).setConstants(consts).setMaxEntries('minimal_map', entries);
  let coll: Collection | undefined;
  try {
    coll = await spec.load();
  } finally {
    spec.close();
  }
  const c = coll;
  const link = Link.attachXdp(c.program(prog), site.dev, { netns: site.ns, mode: 'native' });
  const count = (slot: number): number => {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(slot);
    return c.map('bench_count').lookupPerCpu(key).reduce((s, b) => s + Number(b.readBigUInt64LE(0)), 0);
  };
  return {
    mode: 'native XDP',
    read: async () => ({ decided: count(0), passed: count(1) }),
    stop: async () => {
      link.close();
      c.close();
    },
  };
}

export interface SluiceOptions {
  /** Per-CPU cap on new states a second (sl_config.new_states_per_sec); undefined: the default. */
  newStatesPerSec?: number;
  /** Aggregate pps of the rule; null: none; 0: the default (16,384 keys at the rule's rate);
   *  undefined: the shape's (SPOOF_AGGREGATE_PPS for the spoofed flood, else the default). */
  aggregatePps?: number | null;
  maxEntries?: number;
  /** Load-time constants (e.g. coarse_clock: 0 for the fine clock). */
  constants?: Record<string, number>;
  /** One bucket for the whole rule (`per: rule`) instead of one per source. */
  key?: 'rule';
}

export async function startSluice(site: Site, alg: AlgName, shape: Shape, o: SluiceOptions = {}): Promise<Decider & { mode: string; dp: BenchDatapath }> {
  const dp = await BenchDatapath.load({ ...(o.maxEntries ? { maxEntries: o.maxEntries } : {}), ...(o.constants ? { constants: o.constants } : {}) });
  const agg = o.aggregatePps !== undefined ? o.aggregatePps : shape.name === 'spoof' ? SPOOF_AGGREGATE_PPS : undefined;
  // The default burst: one second's worth (LIMIT.burst) for the buckets, none for the windows.
  dp.limiter.applyPolicy({
    rules: [{ id: 0, alg, pps: LIMIT.pps, ...(o.key ? { key: o.key } : {}), ...(agg === null ? { aggregate: null } : agg ? { aggregate: { pps: agg } } : {}) }],
  });
  if (o.newStatesPerSec !== undefined) dp.limiter.setConfig({ new_states_per_sec: o.newStatesPerSec });
  const link = Link.attachXdp(dp.prog, site.dev, { netns: site.ns, mode: 'native' });
  const total = (): { pass: number; drop: number } => {
    const r = dp.limiter.counters(0);
    const g = dp.limiter.globalCounters();
    return { pass: Number(r.packets[0]! + g.packets[0]!), drop: Number(r.packets[1]! + g.packets[1]!) };
  };
  return {
    mode: 'native XDP',
    dp,
    read: async () => {
      const t = total();
      return { decided: t.pass + t.drop, passed: t.pass };
    },
    stop: async () => {
      link.close();
      dp.close();
    },
  };
}

/**
 * The minimal limiter on the coarse clock with a map of `entries` (every source of the run) and a
 * limit of `limit` packets per source per second (0: every packet after a source's first dropped,
 * the scale section's shape, where Sluice blocks every source after its first packet).
 */
export const minimalCoarse = (name: string, entries: number, limit: number): ConfigDef => ({
  name, title: `minimal per-source XDP limiter, coarse clock, ${entries} entries, limit ${limit}`, kind: 'xdp', shapes: [],
  start: (site) => benchProgram(site, 'bench_minimal_coarse', { minimal_limit: limit }, entries),
});

const sluice = (alg: AlgName): ConfigDef => ({
  name: `sluice-${alg}`,
  title: `Sluice, ${alg}`,
  kind: 'xdp',
  shapes: ['one', 'k1000', 'spoof'],
  start: (site, shape) => startSluice(site, alg, shape),
});

export const CONFIGS: ConfigDef[] = [
  {
    name: 'null',
    title: 'generator alone (the receiving veth has no NAPI: frames dropped at transmit)',
    kind: 'null',
    shapes: ['one', 'k1000', 'spoof'],
    start: async (site) => {
      setGro(site.dev, false, { netns: site.ns });
      return {
        read: async () => ({ decided: 0, passed: 0 }),
        stop: async () => setGro(site.dev, true, { netns: site.ns }),
      };
    },
  },
  { name: 'ceiling', title: 'XDP program that drops everything (the ceiling)', kind: 'xdp', shapes: ['one', 'k1000', 'spoof'], start: (site) => benchProgram(site, 'bench_drop') },
  { name: 'stack', title: 'XDP_PASS into the stack, no limiter (UDP to a bound socket)', kind: 'xdp', shapes: ['one'], start: (site) => benchProgram(site, 'bench_stack') },
  {
    name: 'minimal', title: 'minimal per-source XDP limiter (fine clock, one lookup, fixed window)', kind: 'xdp', shapes: ['one', 'k1000', 'spoof'],
    start: (site) => benchProgram(site, 'bench_minimal', { minimal_limit: LIMIT.pps }),
  },
  {
    name: 'minimal-coarse', title: 'minimal per-source XDP limiter, coarse clock (the clock Sluice reads by default)', kind: 'xdp', shapes: ['one', 'k1000', 'spoof'],
    start: (site) => benchProgram(site, 'bench_minimal_coarse', { minimal_limit: LIMIT.pps }),
  },
  sluice('fixed'),
  sluice('sliding'),
  sluice('token'),
  sluice('gcra'),
  {
    name: 'nftables', title: 'nftables: per-source limit in a dynamic set, netdev ingress', kind: 'netfilter', shapes: ['one', 'k1000', 'spoof'],
    start: async (site) => ({ ...(await startNft(site.ns, site.dev, `sluice_bench_${site.id}`, LIMIT)), mode: 'netdev ingress' }),
  },
  {
    name: 'iptables', title: 'iptables: hashlimit per source, raw PREROUTING', kind: 'netfilter', shapes: ['one', 'k1000', 'spoof'],
    start: async (site) => ({ ...(await startIptables(site.ns, site.dev, `SLB_${site.id.toUpperCase()}`, LIMIT)), mode: 'raw PREROUTING' }),
  },
  {
    name: 'node', title: 'Node.js UDP server with a per-source token bucket', kind: 'user', shapes: ['one', 'k1000', 'spoof'], dport: NODE_PORT,
    start: async (site) => ({ ...(await startNodeLimiter(site.ns, RX_CPU, NODE_PORT, LIMIT)), mode: 'user space' }),
  },
];

export interface RunSample {
  t: number;
  sent: number;
  decided: number;
  passed: number;
  cpu: CpuSample;
}

export interface RunResult {
  config: string;
  shape: ShapeName;
  round: number;
  seconds: number;
  sent: number;
  decided: number;
  passed: number;
  offered_pps: number;
  /** Decided per second of wall time, sender and receiver together on CPU 0. */
  e2e_pps: number;
  cpu0: { busy: number; softirq: number; user: number; system: number };
  cpu1_busy: number;
  /** CPU 0 busy seconds per frame sent (the null run's is the sender's cost, t_gen). */
  busy_ns_per_frame: number;
  /** Set when CPU 1 was busy in every attempt (another process on the machine). */
  disturbed?: boolean;
  /** The generator's CPUs, and the busy seconds of those CPUs over the window (sender and receiver). */
  cpus: number[];
  busy_s: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nowS = (): number => Number(process.hrtime.bigint()) / 1e9;

/** One run: start the configuration, flood for warm + window + tail, sample over the window. */
export async function measure(site: Site, cfg: ConfigDef, shape: Shape, o: { round: number; warmS: number; windowS: number; signal: AbortSignal; cpus?: number[] }): Promise<RunResult> {
  const cpus = o.cpus ?? [RX_CPU, RX_CPU];
  const d = await cfg.start(site, shape);
  try {
    let frames: () => number = () => 0;
    // Runs until the window has been sampled (or the whole benchmark is stopped).
    const stop = new AbortController();
    const onAbort = (): void => stop.abort();
    o.signal.addEventListener('abort', onAbort, { once: true });
    const done = flood({ ...site.target }, {
      pps: 'max', seconds: 600, path: 'live', cpus, dport: cfg.dport ?? SINK_PORT,
      ...shape.flood, signal: stop.signal, onFrames: (f) => (frames = f),
    }).finally(() => o.signal.removeEventListener('abort', onAbort));
    // Awaited below, after the window; a flood that fails at once must not be an unhandled
    // rejection meanwhile (Node ends the process on one, before the testbed is removed).
    done.catch(() => undefined);
    const sample = async (): Promise<RunSample> => {
      const t1 = nowS();
      const cpu = sampleCpus();
      const sent = frames();
      const { decided, passed } = await d.read();
      const t2 = nowS();
      return { t: (t1 + t2) / 2, sent: (sent + frames()) / 2, decided, passed, cpu };
    };
    let a: RunSample;
    let b: RunSample;
    try {
      await sleep(o.warmS * 1000);
      a = await sample();
      await sleep(o.windowS * 1000);
      b = await sample();
    } finally {
      stop.abort();
      await done;
    }
    if (o.signal.aborted) throw new Error('interrupted');
    const dt = b.t - a.t;
    const u = cpuUse(a.cpu, b.cpu);
    const sent = b.sent - a.sent;
    return {
      config: cfg.name,
      shape: shape.name,
      round: o.round,
      seconds: dt,
      sent,
      decided: b.decided - a.decided,
      passed: b.passed - a.passed,
      offered_pps: sent / dt,
      e2e_pps: (b.decided - a.decided) / dt,
      cpu0: { busy: u[0]!.busy, softirq: u[0]!.softirq, user: u[0]!.user, system: u[0]!.system },
      cpu1_busy: u[1]?.busy ?? 0,
      busy_ns_per_frame: (u[0]!.busy * dt * 1e9) / Math.max(1, sent),
      cpus,
      busy_s: [...new Set(cpus)].reduce((s, c) => s + (u[c]?.busy ?? 0) * dt, 0),
    };
  } finally {
    await d.stop();
  }
}

export interface Figure {
  name: string;
  title: string;
  shape: ShapeName;
  mode: string;
  /** Median over runs of each figure; runs keep every run's own. */
  offered_pps: number;
  decided_pps: number;
  ratio_to_ceiling: number;
  e2e_pps: number;
  server_ns_per_packet: number;
  passed_share: number;
  cpu0_busy: number;
  cpu0_softirq: number;
  cpu0_user: number;
  runs: { offered_pps: number; decided_pps: number; ratio_to_ceiling: number; e2e_pps: number; cpu0_busy: number; cpu0_softirq: number; cpu0_user: number; passed: number; decided: number }[];
  spread: { decided_pps: [number, number]; ratio_to_ceiling: [number, number] };
}


/**
 * Figures from raw runs: each run's receiver capacity uses t_gen of the null run of its shape and
 * round, and its ratio the ceiling run of its shape and round.
 */
export function figures(runs: RunResult[], defs: ConfigDef[], modes: Map<string, string>): Figure[] {
  const key = (c: string, s: string, r: number): string => `${c}/${s}/${r}`;
  const byKey = new Map(runs.map((r) => [key(r.config, r.shape, r.round), r]));
  const capacity = (r: RunResult): number => {
    const gen = byKey.get(key('null', r.shape, r.round));
    const tGen = gen ? gen.busy_ns_per_frame : 0;
    const serverS = r.cpu0.busy * r.seconds - (r.sent * tGen) / 1e9;
    return serverS > 0 ? r.decided / serverS : 0;
  };
  const out: Figure[] = [];
  for (const def of defs) {
    if (def.name === 'null') continue;
    for (const shape of def.shapes) {
      const mine = runs.filter((r) => r.config === def.name && r.shape === shape);
      if (!mine.length) continue;
      const per = mine.map((r) => {
        const ceil = byKey.get(key('ceiling', r.shape, r.round));
        const cap = capacity(r);
        return {
          offered_pps: Math.round(r.offered_pps),
          decided_pps: Math.round(cap),
          ratio_to_ceiling: ceil ? +(cap / capacity(ceil)).toFixed(3) : NaN,
          e2e_pps: Math.round(r.e2e_pps),
          cpu0_busy: +r.cpu0.busy.toFixed(3),
          cpu0_softirq: +r.cpu0.softirq.toFixed(3),
          cpu0_user: +r.cpu0.user.toFixed(3),
          passed: r.passed,
          decided: r.decided,
        };
      });
      const dec = per.map((p) => p.decided_pps);
      const rat = per.map((p) => p.ratio_to_ceiling);
      const decidedPps = median(dec);
      out.push({
        name: def.name,
        title: def.title,
        shape,
        mode: modes.get(def.name) ?? '',
        offered_pps: Math.round(median(per.map((p) => p.offered_pps))),
        decided_pps: Math.round(decidedPps),
        ratio_to_ceiling: +median(rat).toFixed(3),
        e2e_pps: Math.round(median(per.map((p) => p.e2e_pps))),
        server_ns_per_packet: decidedPps > 0 ? +(1e9 / decidedPps).toFixed(1) : NaN,
        passed_share: +(per.reduce((s, p) => s + p.passed, 0) / Math.max(1, per.reduce((s, p) => s + p.decided, 0))).toFixed(4),
        cpu0_busy: +median(per.map((p) => p.cpu0_busy)).toFixed(3),
        cpu0_softirq: +median(per.map((p) => p.cpu0_softirq)).toFixed(3),
        cpu0_user: +median(per.map((p) => p.cpu0_user)).toFixed(3),
        runs: per,
        spread: { decided_pps: [Math.min(...dec), Math.max(...dec)], ratio_to_ceiling: [Math.min(...rat), Math.max(...rat)] },
      });
    }
  }
  return out;
}
