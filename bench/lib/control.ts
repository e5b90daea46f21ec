/**
 * The control plane's figures, through the real `sluice` command and library: `sluice top` over a
 * million tracked sources, the time from `sluice set` to enforcement, the time to swap a policy of
 * 10,000 rules, and the resident memory of the daemon (`sluice run`).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Protection } from '../../src/agent/protection';
import { SLUICE_BIN } from '../../src/ebpf';
import { pinDir } from '../../src/agent/state';
import { flood } from '../../src/lab';
import { run } from '../../src/lab/netns';
import { Reason } from '../../src/generated/types';
import { stateMapsOf } from '../../src/limiter/state';
import { BenchDatapath, median } from './datapath';
import { RX_CPU, SINK_PORT, type Site } from './throughput';

const SLUICE = SLUICE_BIN;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

async function sluiceCli(args: string[]): Promise<{ ms: number; stdout: string }> {
  const t0 = nowMs();
  const r = await run(process.execPath, [SLUICE, ...args], { check: true, timeoutMs: 120_000 });
  return { ms: nowMs() - t0, stdout: r.stdout };
}

export interface TopFigure {
  entries: number;
  cli_ms: number[];
  read_ms: number[];
  cli_ms_median: number;
  read_ms_median: number;
}

/**
 * `sluice top` over a state map holding about a million sources, made by real traffic: the lab's
 * generator sends from 1,000,000 sources in sequence (no cap on new states for this) until the map
 * holds them all.
 */
export async function topOverMillion(site: Site, o: { runs: number; log: (s: string) => void; signal: AbortSignal }): Promise<TopFigure> {
  const place = { iface: site.dev, netns: site.ns };
  const { protection: p } = await Protection.up({ ...place, maxEntries: 1 << 21, limits: { algorithm: 'token', rate: 1000 } });
  try {
    p.limiter.setConfig({ new_states_per_sec: 0xffffffff });
    const N = 1_000_000;
    let entries = 0;
    for (let i = 0; i < 5 && entries < N * 0.99 && !o.signal.aborted; i++) {
      await flood(site.target, { pps: 'max', seconds: 2, sources: N, cpus: [RX_CPU, 1], dport: SINK_PORT, signal: o.signal });
      entries = 0;
      for (const [m] of stateMapsOf(p.limiter.maps)) for (const chunk of m.lookupBatch()) entries += chunk.length;
      o.log(`  top: ${entries} entries in the state map`);
    }
    const cli: number[] = [];
    const read: number[] = [];
    for (let i = 0; i < o.runs; i++) {
      const r = await sluiceCli(['top', '--iface', site.dev, '--netns', site.ns, '-n', '20', '--json', '--interval', '0']);
      cli.push(+r.ms.toFixed(0));
      read.push((JSON.parse(r.stdout) as { read_ms: number }).read_ms);
    }
    return { entries, cli_ms: cli, read_ms: read, cli_ms_median: median(cli), read_ms_median: median(read) };
  } finally {
    p.close();
    await Protection.down(place);
  }
}

export interface SetFigure {
  /** From starting `sluice set` to the first packet dropped under the new limit. */
  cli_to_enforced_ms: number[];
  /** `sluice set` alone (a new node process: most of the above). */
  cli_ms: number[];
  /** Limiter.applyPolicy (in process) to the first packet dropped under the new limit. */
  library_to_enforced_ms: number[];
}

/**
 * Time from a limit change to enforcement: one source sends 20,000 packets a second (paced),
 * within its limit of 100,000; the limit goes to 1,000; the time runs until Sluice's counters show
 * the first packet dropped for being over it.
 */
export async function setToEnforcement(site: Site, o: { runs: number; signal: AbortSignal }): Promise<SetFigure> {
  const place = { iface: site.dev, netns: site.ns };
  const out: SetFigure = { cli_to_enforced_ms: [], cli_ms: [], library_to_enforced_ms: [] };
  const { protection: p } = await Protection.up({ ...place, limits: { algorithm: 'token', rate: 100_000 } });
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  o.signal.addEventListener('abort', onAbort, { once: true });
  const traffic = flood(site.target, { pps: 20_000, seconds: 600, path: 'paced', sources: 1, dport: SINK_PORT, signal: stop.signal });
  traffic.catch(() => undefined); // awaited at the end: not an unhandled rejection (which ends the process) meanwhile
  try {
    const limited = (): number => Number(p.limiter.counters(0).reason_packets[Reason.LIMIT]);
    const until = async (t0: number, before: number): Promise<number> => {
      for (;;) {
        if (limited() > before) return nowMs() - t0;
        if (nowMs() - t0 > 10_000 || o.signal.aborted) return NaN;
        await sleep(0.2);
      }
    };
    await sleep(500);
    for (let i = 0; i < o.runs && !o.signal.aborted; i++) {
      // Through the command: a process of its own, as an operator runs it.
      let before = limited();
      let t0 = nowMs();
      const cli = spawn(process.execPath, [SLUICE, 'set', '--iface', site.dev, '--netns', site.ns, '--rate', '1000'], { stdio: 'ignore' });
      const exited = new Promise<number>((r) => cli.once('exit', () => r(nowMs() - t0)));
      out.cli_to_enforced_ms.push(+(await until(t0, before)).toFixed(1));
      out.cli_ms.push(+(await exited).toFixed(1));
      await sluiceCli(['set', '--iface', site.dev, '--netns', site.ns, '--rate', '100000']);
      await sleep(300);
      // Through the library, in process.
      before = limited();
      t0 = nowMs();
      p.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 1000 }] });
      out.library_to_enforced_ms.push(+(await until(t0, before)).toFixed(2));
      p.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', pps: 100_000 }] });
      await sleep(300);
    }
    return out;
  } finally {
    stop.abort();
    await traffic.catch(() => undefined);
    o.signal.removeEventListener('abort', onAbort);
    p.close();
    await Protection.down(place);
  }
}

export interface SwapFigure {
  rules: number;
  cidr_entries: number;
  compile_and_apply_ms: number[];
  median_ms: number;
}

/** Swap between two policies of 10,000 rules (each with its own source /24), in process. */
export async function swapPolicy(o: { rules: number; runs: number }): Promise<SwapFigure> {
  const dp = await BenchDatapath.load({ maxRules: 16_384, cidrEntries: 1 << 16 });
  try {
    // cidrPolicy spreads N prefixes over min(N, 1000) rules; here one prefix per rule.
    const policy = (shift: number) => ({
      rules: [
        { id: 0, alg: 'token' as const, pps: 1000 },
        ...Array.from({ length: o.rules - 1 }, (_, i) => ({ id: i + 1, src: [`${20 + ((i + shift) >> 16)}.${((i + shift) >> 8) & 255}.${(i + shift) & 255}.0/24`], alg: 'token' as const, pps: 1000 + shift })),
      ],
    });
    const a = policy(0);
    const b = policy(1);
    const times: number[] = [];
    dp.limiter.applyPolicy(a);
    for (let i = 0; i < o.runs; i++) {
      const t0 = nowMs();
      dp.limiter.applyPolicy(i % 2 ? a : b);
      times.push(+(nowMs() - t0).toFixed(1));
    }
    return { rules: o.rules, cidr_entries: o.rules - 1, compile_and_apply_ms: times, median_ms: median(times) };
  } finally {
    dp.close();
  }
}

export interface DaemonFigure {
  rss_idle_mb: number;
  rss_under_flood_mb: number;
  hwm_mb: number;
}

const rssOf = (pid: number): { rss: number; hwm: number } => {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
};

/** `sluice run` protecting the testbed's veth: resident memory idle, and after a flood of 1,000 sources. */
export async function daemonMemory(site: Site, o: { signal: AbortSignal }): Promise<DaemonFigure> {
  const place = { iface: site.dev, netns: site.ns };
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-'));
  const config = join(dir, 'sluice.yaml');
  // The API on a socket in this run's own directory. (With `socket: null` the daemon, left with
  // nothing to wait on, exits at once.)
  writeFileSync(config, `interfaces:\n  - iface: ${site.dev}\n    netns: ${site.ns}\n    limits: { algorithm: token, rate: 100 }\napi: { socket: ${join(dir, 'api.sock')} }\nlog: { level: warn }\n`);
  const d = spawn(process.execPath, [SLUICE, 'run', '--config', config, '--detach-on-exit'], { stdio: 'ignore' });
  try {
    const link = join(pinDir(place), 'link');
    for (let i = 0; i < 100 && !existsSync(link); i++) await sleep(100);
    if (!existsSync(link)) throw new Error('the daemon did not attach within 10 s');
    await sleep(3000);
    const idle = rssOf(d.pid!);
    await flood(site.target, { pps: 'max', seconds: 3, sources: 1000, cpus: [RX_CPU, RX_CPU], dport: SINK_PORT, signal: o.signal });
    await sleep(1000);
    const busy = rssOf(d.pid!);
    return { rss_idle_mb: +idle.rss.toFixed(1), rss_under_flood_mb: +busy.rss.toFixed(1), hwm_mb: +busy.hwm.toFixed(1) };
  } finally {
    const gone = new Promise<void>((r) => d.once('exit', () => r()));
    d.kill('SIGTERM');
    await Promise.race([gone, sleep(10_000)]);
    if (d.exitCode === null && d.signalCode === null) d.kill('SIGKILL');
    await Protection.down(place).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}
