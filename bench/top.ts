/**
 * The control plane at scale (issue 12): `sluice policy check` of 20,000 and 100,000 deny
 * prefixes; `sluice top` and `/v1/top` over 1,000,000 state entries, with the daemon's event-loop
 * lag and heap while a dashboard polls and a scraper reads /metrics. On a veth in namespaces of
 * its own; the state map is filled directly (1,000,000 synthetic sources, token buckets with
 * random backlogs) rather than by traffic, which `npm run bench -- --only control` does.
 *
 *   node --expose-gc dist/bench/top.js [--runs 3] [--out bench/results/top.json]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import pino from 'pino';
import type { Daemon } from '../src/agent/daemon';
import { startDaemon } from '../src/cli/daemon';
import { Protection } from '../src/agent/protection';
import { liveRules } from '../src/agent/report';
import { Bounds, SL_KEY_SIZE, SL_STATE_SIZE, StateBits } from '../src/generated/types';
import { REPO } from '../src/ebpf';
import { writeConfig } from '../src/lab/daemon-process';
import { Testbed } from '../src/lab/testbed';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const RUNS = Number(arg('runs', '3'));
const OUT = arg('out', join(REPO, 'bench', 'results', 'top.json'));
const N = 1_000_000;
/**
 * Run the command; its wall time and its CPU time (user + system, from /usr/bin/time): on a
 * machine shared with other work the wall time also counts the time the command waited for a CPU.
 */
const cli = (args: string[]): { ms: number; cpuMs: number; stdout: string } => {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', 'cpu %U %S', process.execPath, join(REPO, 'bin', 'sluice.js'), ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`sluice ${args.join(' ')}: ${r.stderr}`);
  const m = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
  return { ms, cpuMs: m ? Math.round((Number(m[1]) + Number(m[2])) * 1000) : NaN, stdout: r.stdout };
};

/** n distinct prefixes, /8 to /32, one in ten IPv6, many nested (like merged feeds). */
function denyList(n: number): string {
  let x = 12345;
  const r = (): number => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const seen = new Set<string>();
  while (seen.size < n) {
    const a = r();
    const plen = 8 + (r() % 25);
    const m = plen === 32 ? a : (a & ~((1 << (32 - plen)) - 1)) >>> 0;
    seen.add(seen.size % 10 === 9 ? `"2001:db8:${(a & 0xffff).toString(16)}:${(a >>> 16).toString(16)}::/${48 + (r() % 17)}"` : `${m >>> 24}.${(m >>> 16) & 255}.${(m >>> 8) & 255}.${m & 255}/${plen}`);
  }
  return `deny:\n${[...seen].map((s) => `  - ${s}`).join('\n')}\n`;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-top-'));
  const result: Record<string, unknown> = { cpu: cpus()[0]?.model, cpus: cpus().length, loadavg_before: loadavg().map((l) => +l.toFixed(2)) };
  const tb = new Testbed();
  let daemon: Daemon | undefined;
  try {
    // ---- policy check
    const check: Record<string, number[]> = {};
    const checkCpu: Record<string, number[]> = {};
    for (const n of [20_000, 100_000]) {
      const f = join(dir, `deny-${n}.yaml`);
      writeFileSync(f, denyList(n));
      check[n] = [];
      checkCpu[n] = [];
      for (let i = 0; i < RUNS; i++) {
        const r = cli(['policy', 'check', f, '--json']);
        check[n]!.push(Math.round(r.ms));
        checkCpu[n]!.push(r.cpuMs);
      }
      console.log(`policy check ${n}: ${check[n]!.join(', ')} ms (CPU ${checkCpu[n]!.join(', ')} ms)`);
    }
    result.policy_check_ms = check;
    result.policy_check_cpu_ms = checkCpu;

    // ---- a protected veth with a million states
    const a = await tb.addNs('a');
    const b = await tb.addNs('b');
    const veth = await tb.addVeth(a, b);
    const place = { iface: veth.b.ifname, netns: b };
    const configFile = join(dir, 'sluice.yaml');
    writeConfig(configFile, { interfaces: [{ iface: place.iface, netns: place.netns, max_entries: 1_200_000, limits: { algorithm: 'token', rate: 1000 } }], api: { socket: null } });
    daemon = await startDaemon({ configFile, listen: false, watch: false, logger: pino({ level: 'warn' }) });
    const p = Protection.open(place);
    const map = p.limiter.maps.rate_limit_map;
    const now = process.hrtime.bigint();
    const epoch = liveRules(p).get(0)!.epoch & 0xffff;
    for (let base = 0; base < N; base += 65536) {
      const count = Math.min(65536, N - base);
      const keys = Buffer.alloc(count * SL_KEY_SIZE);
      const values = Buffer.alloc(count * SL_STATE_SIZE);
      // struct sl_key (rule 0, /32, an IPv4 address) and sl_state (bpf/sluice.h), of the rule's epoch
      for (let j = 0; j < count; j++) {
        const i = base + j;
        keys[j * SL_KEY_SIZE + 2] = 32;
        keys.writeUInt32BE((10 << 24) + i, j * SL_KEY_SIZE + 4);
        values.writeBigUInt64LE(now + BigInt((i * 7919) % 1_000_000) * 1000n, j * SL_STATE_SIZE); // backlog up to 1 s
        values.writeUInt32LE((i % 97) * StateBits.DROP_ONE, j * SL_STATE_SIZE + 8);
        values.writeUInt16LE(epoch, j * SL_STATE_SIZE + 12);
        values.writeUInt16LE(Number((now >> BigInt(Bounds.SEEN_SHIFT)) & 0xffffn), j * SL_STATE_SIZE + 14);
      }
      map.updatePacked({ count, keys, values });
    }
    let entries = 0;
    for (const c of map.batches({ batchSize: 8192 })) entries += c.count;
    p.close();
    result.entries = entries;
    console.log(`state map: ${entries} entries`);

    // ---- sluice top (a process of its own)
    const top: number[] = [];
    const topCpu: number[] = [];
    const read: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = cli(['top', '--iface', place.iface, '--netns', place.netns, '-n', '20', '--json', '--interval', '0']);
      top.push(Math.round(r.ms));
      topCpu.push(r.cpuMs);
      read.push((JSON.parse(r.stdout) as { read_ms: number }).read_ms);
    }
    result.sluice_top_ms = top;
    result.sluice_top_cpu_ms = topCpu;
    result.sluice_top_read_ms = read;
    console.log(`sluice top: ${top.join(', ')} ms (CPU ${topCpu.join(', ')} ms; map read and ranked in ${read.join(', ')} ms)`);

    // ---- /v1/top in the daemon, alone and with a dashboard polling and a scraper
    const app = daemon.api();
    const url = `/v1/top?iface=${place.iface}&netns=${place.netns}&n=20`;
    const alone: number[] = [];
    const aloneCpu: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const res = await app.inject({ method: 'GET', url });
      if (res.statusCode !== 200) throw new Error(res.body);
      const c = process.cpuUsage(c0);
      alone.push(Math.round(performance.now() - t0));
      aloneCpu.push(Math.round((c.user + c.system) / 1000));
    }
    result.v1_top_ms = alone;
    result.v1_top_cpu_ms = aloneCpu;
    console.log(`/v1/top: ${alone.join(', ')} ms (CPU ${aloneCpu.join(', ')} ms)`);
    global.gc?.();
    const heap0 = process.memoryUsage().heapUsed;
    let heapMax = heap0;
    const sampler = setInterval(() => { heapMax = Math.max(heapMax, process.memoryUsage().heapUsed); }, 20);
    const h = monitorEventLoopDelay({ resolution: 10 });
    const gcs: number[] = [];
    const gcObserver = new PerformanceObserver((l) => { for (const e of l.getEntries()) gcs.push(e.duration); });
    gcObserver.observe({ entryTypes: ['gc'] });
    // The longest gaps between turns of the loop, and when (to tell them from GC pauses).
    const gaps: { at: number; ms: number }[] = [];
    let last = performance.now();
    const ticker = setInterval(() => { const t = performance.now(); if (t - last > 50) gaps.push({ at: Math.round(t - t0), ms: Math.round(t - last - 5) }); last = t; }, 5);
    h.enable();
    const t0 = performance.now();
    const polls: Promise<unknown>[] = [];
    // 10 s of a dashboard polling /v1/top and /v1/status every 250 ms, and /metrics every second.
    for (let t = 0; t < 10_000; t += 250) {
      polls.push(new Promise((r) => setTimeout(r, t)).then(() => Promise.all([app.inject({ method: 'GET', url }), app.inject({ method: 'GET', url: '/v1/status' }), t % 1000 === 0 ? app.inject({ method: 'GET', url: '/metrics' }) : null])));
    }
    await Promise.all(polls);
    h.disable();
    clearInterval(sampler);
    clearInterval(ticker);
    gcObserver.disconnect();
    result.dashboard = {
      gc_pauses: gcs.length,
      gc_pause_max_ms: +Math.max(0, ...gcs).toFixed(1),
      gaps_over_50ms: gaps,
      seconds: +((performance.now() - t0) / 1000).toFixed(1),
      lag_max_ms: +(h.max / 1e6).toFixed(1),
      lag_p99_ms: +(h.percentile(99) / 1e6).toFixed(1),
      lag_mean_ms: +(h.mean / 1e6).toFixed(1),
      heap_growth_mb: +((heapMax - heap0) / 2 ** 20).toFixed(1),
    };
    console.log(`dashboard polling for 10 s: ${JSON.stringify(result.dashboard)}`);
    await app.close();
  } finally {
    await daemon?.stop({ detach: true });
    await tb.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
  result.loadavg_after = loadavg().map((l) => +l.toFixed(2));
  writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`written ${OUT}`);
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
