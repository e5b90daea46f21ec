/**
 * Large list writes and the event loop (issue 12): how long one change of 60,000 list entries
 * holds the event loop of the process that makes it (the daemon serves its API meanwhile).
 *
 * Through the data path's maps loaded from the test object (BPF_PROG_TEST_RUN needs no
 * interface), each change in turn: 60,000 deny prefixes into empty lists, 60,000 others in their
 * place, then none; each made by
 *   - `sliced`: Limiter.applyAsync, what the daemon and the CLI now use (compiled and written in
 *     slices of about 20 ms, the event loop running between them, one flip at the end);
 *   - `at once`: Limiter.apply of this commit, the same work without a pause;
 *   - `before` (with --baseline DIR, a build of another commit by scripts/baseline.sh): that
 *     commit's Limiter.apply on the same maps (one syscall per entry, no pause).
 * Then the daemon's own path: Protection.update of a protected veth (namespaces of its own) with
 * the same lists. Measured: the wall time of the change and the longest gap between two turns of
 * the event loop during it (a 5 ms interval timer; and monitorEventLoopDelay's max), with the GC
 * pauses seen. Ratios matter, not the figures: the machine is shared (the load average is noted).
 *
 *   node dist/bench/lists.js [--runs 3] [--baseline DIR] [--out bench/results/lists.json]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { Protection } from '../src/agent/protection';
import type { Lists } from '../src/limiter/lists';
import { REPO, TEST_OBJECT } from '../src/ebpf';
import { Testbed } from '../src/lab/testbed';
import { limiterMapsOf, loadDataPath } from '../src/limiter/datapath';
import { Limiter, type LimiterMaps } from '../src/limiter/limiter';

const arg = (name: string, dflt: string | undefined): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const RUNS = Number(arg('runs', '3'));
const OUT = arg('out', join(REPO, 'bench', 'results', 'lists.json'))!;
const BASELINE = arg('baseline', undefined);
const N = 60_000;

const hosts = (first: number): string[] => Array.from({ length: N }, (_, i) => `${first}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);
const CHANGES: [string, Lists][] = [
  ['60,000 into empty lists', { mgmt: [], allow: [], deny: hosts(10) }],
  ['60,000 others in their place', { mgmt: [], allow: [], deny: hosts(11) }],
  ['back to none', { mgmt: [], allow: [], deny: [] }],
];

interface Lag { ms: number; gap_max_ms: number; lag_max_ms: number; gc_max_ms: number }

/** Run one change, measuring its wall time and the event loop's longest pause meanwhile. */
async function measured(fn: () => unknown): Promise<Lag> {
  const h = monitorEventLoopDelay({ resolution: 5 });
  const gcs: number[] = [];
  const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) gcs.push(e.duration); });
  obs.observe({ entryTypes: ['gc'] });
  let gap = 0;
  let last = performance.now();
  const tick = setInterval(() => { const t = performance.now(); gap = Math.max(gap, t - last); last = t; }, 5);
  await new Promise((r) => setTimeout(r, 30));
  h.enable();
  gap = 0;
  last = performance.now();
  const t0 = performance.now();
  await fn();
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 30)); // the timer's turn after the change
  clearInterval(tick);
  h.disable();
  obs.disconnect();
  return { ms: Math.round(ms), gap_max_ms: Math.round(gap), lag_max_ms: Math.round(h.max / 1e6), gc_max_ms: +Math.max(0, ...gcs).toFixed(1) };
}

async function main(): Promise<void> {
  const result: Record<string, unknown> = {
    what: `one change of ${N} list entries: its wall time and the longest pause of the event loop during it`,
    at: new Date().toISOString(),
    cpu: cpus()[0]?.model,
    cpus: cpus().length,
    loadavg_before: loadavg().map((l) => +l.toFixed(2)),
    runs: RUNS,
  };
  const loaded = await loadDataPath(TEST_OBJECT, { maxListEntries: 2 * N });
  const dp = { limiter: new Limiter(limiterMapsOf(loaded.coll.maps)), close: () => loaded.close() };
  const modes: [string, (l: Lists) => unknown][] = [
    ['sliced', (lists) => dp.limiter.applyAsync({ lists })],
    ['at once', (lists) => dp.limiter.apply({ lists })],
  ];
  if (BASELINE) {
    const dir = resolve(BASELINE);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(join(dir, 'dist', 'src', 'limiter', 'limiter.js')) as { Limiter: new (m: LimiterMaps) => Limiter };
    const before = new mod.Limiter(dp.limiter.maps);
    let commit = dir;
    try { commit = readFileSync(join(dir, 'COMMIT'), 'utf8').trim().slice(0, 12); } catch { /* not made by scripts/baseline.sh */ }
    modes.push([`before (${commit})`, (lists) => before.apply({ lists })]);
    result.baseline = { dir, commit };
  }
  const rows: { mode: string; change: string; runs: Lag[] }[] = [];
  const record = (mode: string, change: string, m: Lag): void => {
    let row = rows.find((r) => r.mode === mode && r.change === change);
    if (!row) rows.push((row = { mode, change, runs: [] }));
    row.runs.push(m);
  };
  try {
    for (let run = 0; run < RUNS; run++) {
      for (const [mode, apply] of modes) {
        for (const [what, lists] of CHANGES) {
          const m = await measured(() => apply(lists));
          record(mode, what, m);
          console.log(`${run} ${mode.padEnd(10)} ${what.padEnd(30)} ${String(m.ms).padStart(5)} ms, longest pause ${String(m.gap_max_ms).padStart(5)} ms (loop delay max ${m.lag_max_ms} ms, GC max ${m.gc_max_ms} ms)`);
        }
      }
    }
  } finally {
    dp.close();
  }

  // The daemon's path: a protected veth, Protection.update (journal, sliced write, one flip, settings).
  const tb = new Testbed();
  try {
    const a = await tb.addNs('cli');
    const b = await tb.addNs('srv');
    const veth = await tb.addVeth(a, b);
    const place = { iface: veth.b.ifname, netns: b };
    const { protection: p } = await Protection.up({ ...place, maxListEntries: 2 * N });
    try {
      for (let run = 0; run < RUNS; run++) {
        for (const [what, lists] of CHANGES) {
          const m = await measured(() => p.update({ lists }));
          record('Protection.update', what, m);
          console.log(`${run} ${'Protection.update'.padEnd(10)} ${what.padEnd(30)} ${String(m.ms).padStart(5)} ms, longest pause ${String(m.gap_max_ms).padStart(5)} ms (loop delay max ${m.lag_max_ms} ms, GC max ${m.gc_max_ms} ms)`);
        }
      }
    } finally {
      p.close();
      await Protection.down(place);
    }
  } finally {
    await tb.cleanup();
  }
  result.results = rows;
  result.loadavg_after = loadavg().map((l) => +l.toFixed(2));
  writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`written ${OUT}`);
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
