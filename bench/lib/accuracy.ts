/**
 * Accuracy under load: the lab's generator at full speed, Sluice attached, and what passed over a
 * window in the middle of the flood against what the algorithm admits over that window.
 *
 * Every algorithm's long-run rate is its configured rate, and at ten thousand times the offered
 * load each spends its budget as soon as it has one, so the expectation is rate x window. The
 * window is k whole seconds starting 100 ms after a second boundary of CLOCK_MONOTONIC (the data
 * path's clock, and process.hrtime's), so that for the fixed window it holds exactly k windows'
 * budgets; the coarse clock lags the fine one by at most a jiffy, well inside the 100 ms.
 */
import { Link } from '../../src/ebpf';
import { flood } from '../../src/lab';
import type { AlgName } from '../../src/limiter/models';
import { BenchDatapath } from './datapath';
import { RX_CPU, SINK_PORT, type Site } from './throughput';

export interface AccuracyRow {
  alg: AlgName;
  clock: 'coarse' | 'fine';
  sources: number;
  /** Per source, packets a second. */
  rate: number;
  window_s: number;
  offered_pps: number;
  passed: number;
  expected: number;
  error: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const monoNs = (): bigint => process.hrtime.bigint();

/** Sleep until CLOCK_MONOTONIC reads `at` (ns). */
async function sleepUntil(at: bigint): Promise<void> {
  const ms = Number(at - monoNs()) / 1e6;
  if (ms > 2) await sleep(ms - 2);
  while (monoNs() < at) { /* the last milliseconds, to the microsecond */ }
}

export async function accuracyRun(site: Site, alg: AlgName, clock: 'coarse' | 'fine', sources: number, rate: number, o: { windowS: number; signal: AbortSignal }): Promise<AccuracyRow> {
  const dp = await BenchDatapath.load(clock === 'fine' ? { constants: { coarse_clock: 0 } } : {});
  const link = Link.attachXdp(dp.prog, site.dev, { netns: site.ns, mode: 'native' });
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  o.signal.addEventListener('abort', onAbort, { once: true });
  try {
    // The default burst: a second's worth for the buckets, none for the windows.
    dp.limiter.applyPolicy({ rules: [{ id: 0, alg, pps: rate, aggregate: null }] });
    let frames: () => number = () => 0;
    const done = flood(site.target, {
      // Four generator threads: a live-frame run pauses tens of ms to set up, and a pause in the
      // offered load lets a bucket fill, to be spent after it (more passes in a window that starts
      // after a pause); with four, all of them pausing at once is rare.
      pps: 'max', seconds: 600, path: 'live', cpus: [RX_CPU, RX_CPU, RX_CPU, RX_CPU], sources, dport: SINK_PORT, signal: stop.signal,
      onFrames: (f) => (frames = f),
    });
    done.catch(() => undefined); // awaited in finally: not an unhandled rejection (which ends the process) meanwhile
    try {
      await sleep(1200); // past the first second: every bucket has spent its initial burst
      // From 100 ms after a second boundary, for windowS whole seconds.
      const start = (monoNs() / 1_000_000_000n + 1n) * 1_000_000_000n + 100_000_000n;
      await sleepUntil(start);
      const p0 = Number(dp.limiter.counters(0).packets[0]);
      const f0 = frames();
      const t0 = monoNs();
      await sleepUntil(start + BigInt(o.windowS) * 1_000_000_000n);
      const p1 = Number(dp.limiter.counters(0).packets[0]);
      const f1 = frames();
      const seconds = Number(monoNs() - t0) / 1e9;
      const passed = p1 - p0;
      const expected = rate * sources * o.windowS;
      return { alg, clock, sources, rate, window_s: +seconds.toFixed(4), offered_pps: Math.round((f1 - f0) / seconds), passed, expected, error: +((passed - expected) / expected).toFixed(5) };
    } finally {
      stop.abort();
      await done.catch(() => undefined);
    }
  } finally {
    o.signal.removeEventListener('abort', onAbort);
    link.close();
    dp.close();
  }
}
