/**
 * `sluice demo --http`: does a web server stay usable while one client floods it?
 *
 * The lab with an HTTP server whose page costs CPU (default 1 ms, like a small dynamic page),
 * well-behaved clients asking for it at a steady pace and timing every answer, and one abusive
 * client. One run measures, for the well-behaved clients, the share of requests answered and the
 * p50/p99 latency in each phase:
 *
 *   baseline              no abuser, no Sluice
 *   HTTP flood            the abuser in a request loop on many connections, no Sluice
 *   packet flood          the abuser's packet generator instead, no Sluice
 *   (Sluice comes up on the server's side: per-source limits the well-behaved stay under)
 *   packet flood, Sluice
 *   HTTP flood, Sluice
 *
 * Sluice comes up once, with no flood running (loading and verifying its program takes seconds on
 * a busy machine), so the phases without it come first. A flood that does not hurt the server
 * (p99 under 5x the baseline and 90% or more answered) is raised (more connections, from a second
 * and a third process; a TCP SYN flood at the listening port) and measured again, and the demo says
 * so; if the strongest flood still does not hurt, it says that too.
 *
 * The lab shares its machine between the server, its clients and the abuser, and often with other
 * work. A real server has its CPUs; the abuser sits elsewhere. So the HTTP server runs as a deadline
 * task (up to 0.9 ms of CPU in each 1 ms, ahead of everything else) and the well-behaved clients at
 * real-time priority (SCHED_FIFO 1), the abuser at normal priority: what the figures show is what
 * the flood does to the server, not what other processes do to the measurement. (One side effect:
 * on a veth, the kernel's receive work for a packet flood runs on the CPU that sends it, at normal
 * priority, so a packet flood costs the server less here than through a NIC.)
 *
 * Ctrl-C at any point stops the traffic and tears everything down.
 */
import { execFile } from 'node:child_process';
import { Protection } from '../agent/protection';
import { takeSnapshot } from '../agent/report';
import { httpLoadFrom, type HttpLoadResult } from '../lab/http-load';
import { startHttpUsers, type HttpUsers, type UserSample } from '../lab/http-users';
import { labCount, labCountReset, labDown, labFlood, labUp, type FloodProto, type FloodResult } from '../lab/index';

export const HTTP_DEMO_LAB = 'demoweb';

/** A flood hurts when the well-behaved clients' p99 reaches this many times the baseline's … */
export const HURT_P99_FACTOR = 5;
/** … or when fewer than this share of their requests is answered (%). */
export const HURT_SUCCESS_PCT = 90;
/** Sluice holds when, under the flood, their p99 stays within this many times the baseline's … */
export const HELD_P99_FACTOR = 2;
/** … and at least this share of their requests is answered (%). */
export const HELD_SUCCESS_PCT = 99;

export type RoundKind = 'http' | 'packet';

export interface HttpDemoOptions {
  /** CPU each page costs, µs (default 1000). */
  pageCpuUs?: number;
  /** Requests per second of each well-behaved client (default 25, 30, 30, 35). */
  users?: number[];
  /** Sluice's limit per source address: packets per second and burst (default 50/s, burst 6). */
  rate?: number;
  burst?: number;
  /** Connections of one abusive HTTP process (default 256). */
  connections?: number;
  /** Offered packets per second of the packet flood's first level (default: the generator's full speed). */
  floodPps?: number;
  /** Seconds each phase is measured (default 5). */
  phaseS?: number;
  /** Seconds a flood runs before its phase is measured (default 1.5). */
  settleS?: number;
  /** A request not answered within this counts as failed, ms (default 2000). */
  timeoutMs?: number;
  /** The rounds, in order (default both). */
  rounds?: RoundKind[];
  out: (s: string) => void;
  signal?: AbortSignal;
  /** Lab id (default "demoweb"). */
  id?: string;
}

export interface PhaseResult {
  /** baseline, flood (no Sluice) or sluice. */
  phase: 'baseline' | 'flood' | 'sluice';
  /** What the abuser did, in words ("" for the baseline). */
  flood: string;
  sluice: boolean;
  seconds: number;
  /** The well-behaved clients together. */
  requests: number;
  completed: number;
  failed: number;
  timed_out: number;
  success_pct: number;
  /** Latency of the answered requests, ms; null when none was answered. */
  p50_ms: number | null;
  p90_ms: number | null;
  p99_ms: number | null;
  max_ms: number | null;
  /** Packets per second from the abuser's address that reached the server (after Sluice). */
  abuser_reached_pps: number;
  /** Packets per second Sluice dropped from the abuser (0 without Sluice). */
  abuser_dropped_pps: number;
  /** Packets per second the packet generator offered in the phase (packet floods only). */
  abuser_offered_pps: number | null;
  /** Packets Sluice dropped from the well-behaved clients in the phase. */
  well_behaved_dropped: number;
}

export interface RoundResult {
  flood: RoundKind;
  /** Without Sluice: the first flood and each raise, in order; the last is the one Sluice met. */
  attempts: PhaseResult[];
  /** Whether the last attempt hurt the server (p99 >= 5x the baseline or success < 90%). */
  hurt: boolean;
  /** The flood was raised as far as the demo goes and still did not hurt. */
  could_not_hurt: boolean;
  with_sluice: PhaseResult | null;
  /** With Sluice: p99 <= 2x the baseline and success >= 99%. */
  held: boolean | null;
  /** What the demo said about the round as it ran (each raise, a flood that could not hurt). */
  notes: string[];
}

export interface HttpDemoResult {
  page_cpu_us: number;
  users_rps: number[];
  limit: { rate: number; burst: number };
  phase_seconds: number;
  timeout_ms: number;
  /** Whether the server and the well-behaved clients got real-time priority. */
  realtime: boolean;
  baseline: PhaseResult | null;
  rounds: RoundResult[];
  /** Seconds Sluice took to come up on every interface. */
  sluice_up_seconds: number | null;
  seconds: number;
  interrupted: boolean;
}

class Interrupted extends Error {}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new Interrupted());
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new Interrupted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

/** The well-behaved clients' figures for the requests started in [t0, t1). */
export function phaseFigures(samples: UserSample[], t0: number, t1: number): Pick<PhaseResult, 'requests' | 'completed' | 'failed' | 'timed_out' | 'success_pct' | 'p50_ms' | 'p90_ms' | 'p99_ms' | 'max_ms'> {
  const mine = samples.filter((s) => s.at >= t0 && s.at < t1);
  const ok = mine.filter((s) => s.outcome === 'ok').map((s) => s.ms).sort((a, b) => a - b);
  const lat = (x: number): number | null => (ok.length ? r3(x) : null);
  return {
    requests: mine.length,
    completed: ok.length,
    failed: mine.filter((s) => s.outcome === 'failed').length,
    timed_out: mine.filter((s) => s.outcome === 'timed_out').length,
    success_pct: mine.length ? r3((100 * ok.length) / mine.length) : 0,
    p50_ms: lat(percentile(ok, 50)),
    p90_ms: lat(percentile(ok, 90)),
    p99_ms: lat(percentile(ok, 99)),
    max_ms: lat(ok[ok.length - 1] ?? 0),
  };
}

/** Whether a phase shows the flood hurting the server, against the baseline. A phase where
 *  nothing was answered has no latency: it hurt. */
export function hurts(p: Pick<PhaseResult, 'p99_ms' | 'success_pct'>, base: Pick<PhaseResult, 'p99_ms'>): boolean {
  return p.success_pct < HURT_SUCCESS_PCT || p.p99_ms === null || p.p99_ms >= HURT_P99_FACTOR * base.p99_ms!;
}

/** Whether Sluice kept the server usable under the flood, against the baseline. */
export function holds(p: Pick<PhaseResult, 'p99_ms' | 'success_pct'>, base: Pick<PhaseResult, 'p99_ms'>): boolean {
  return p.p99_ms !== null && p.success_pct >= HELD_SUCCESS_PCT && p.p99_ms <= HELD_P99_FACTOR * base.p99_ms!;
}

/** p99 against the baseline's, as "3.1x" ("-" when there is no latency). */
const times = (p: PhaseResult, base: PhaseResult): string => (p.p99_ms === null || !base.p99_ms ? '-' : `${(p.p99_ms / base.p99_ms).toFixed(1)}x`);

/** A flood running from the abusive client. */
interface Flood {
  describe: string;
  /** Frames sent so far (packet floods on the live path). */
  frames?: () => number;
  stop(): Promise<FloodResult | HttpLoadResult[] | undefined>;
}

/** An HTTP flood: processes, each with this many connections in a request loop. */
interface HttpLevel { kind: 'http'; processes: number; connections: number }
interface PacketLevel { kind: 'packet'; proto: FloodProto; pps: number | 'max' }
type Level = HttpLevel | PacketLevel;

/** The floods of a round, weakest first: each is tried only if the one before did not hurt. */
function levels(kind: RoundKind, o: { floodPps?: number; connections: number }): Level[] {
  // 1 process of c connections, 2 of 2c, 3 of 3c: c, 4c and 9c in all.
  if (kind === 'http') return [1, 2, 3].map((k) => ({ kind: 'http', processes: k, connections: k * o.connections }));
  return [
    ...(o.floodPps !== undefined ? [{ kind: 'packet', proto: 'udp', pps: o.floodPps } as const] : []),
    { kind: 'packet', proto: 'udp', pps: 'max' },
    { kind: 'packet', proto: 'tcp-syn', pps: 'max' },
  ];
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (x: number | null): string => (x === null ? '-' : x >= 100 ? fmt(x) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

function describeLevel(l: Level): string {
  if (l.kind === 'http') {
    return `HTTP flood: ${fmt(l.connections * l.processes)} connections in a request loop${l.processes > 1 ? ` (${l.processes} processes)` : ''}`;
  }
  const what = l.proto === 'udp' ? 'UDP to port 80' : 'TCP SYN to port 80';
  return `packet flood: ${what}, ${l.pps === 'max' ? "the generator's full speed" : `${fmt(l.pps)} packets/s`}`;
}

/** Run `chrt` with these arguments; resolves with why it failed, or undefined. */
function chrt(args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('chrt', args, (e, _out, stderr) => resolve(e ? (stderr.trim() || e.message) : undefined));
  });
}

/**
 * The server's main thread as a deadline task: up to 0.9 ms of CPU in every 1 ms, ahead of every
 * other task. Like a server with a CPU of its own, it runs when it has work; and when a flood keeps
 * it busy it still yields a tenth of each millisecond (SCHED_FIFO would run it flat out, then the
 * kernel's real-time throttling would stop it for 50 ms each second: stalls no real server has).
 */
function serverPriority(pid: number): Promise<string | undefined> {
  return chrt(['--deadline', '--reset-on-fork', '--sched-runtime', '900000', '--sched-deadline', '1000000', '--sched-period', '1000000', '--pid', '0', String(pid)]);
}

export async function runHttpDemo(o: HttpDemoOptions): Promise<HttpDemoResult> {
  const pageCpuUs = o.pageCpuUs ?? 1000;
  const usersRps = o.users ?? [25, 30, 30, 35];
  const rate = o.rate ?? 50;
  const burst = o.burst ?? 6;
  const connections = o.connections ?? 256;
  const phaseS = o.phaseS ?? 5;
  const settleS = o.settleS ?? 1.5;
  const timeoutMs = o.timeoutMs ?? 2000;
  const rounds = o.rounds ?? ['http', 'packet'];
  const id = o.id ?? HTTP_DEMO_LAB;
  const signal = o.signal;
  const out = o.out;
  const t0 = Date.now();
  const result: HttpDemoResult = {
    page_cpu_us: pageCpuUs, users_rps: usersRps, limit: { rate, burst }, phase_seconds: phaseS, timeout_ms: timeoutMs,
    realtime: false, baseline: null, rounds: [], sluice_up_seconds: null, seconds: 0, interrupted: false,
  };
  const n = usersRps.length + 1;
  const abuser = n; // the last client

  out(`Setting up the lab: an HTTP server and ${n} clients in network namespaces (no route out), one veth pair each.\n`);
  await labDown({ id }); // a demo interrupted by a crash left its lab behind
  const { layout } = await labUp({ id, clients: n, pageCpuUs });
  const protections: Protection[] = [];
  const users: HttpUsers[] = [];
  let flood: Flood | undefined;
  try {
    const why = await serverPriority(layout.server.http.pid);
    result.realtime = why === undefined;
    out(`The server's page costs ${cpuText(pageCpuUs)} of CPU (hashing). ` +
      `Clients 1-${n - 1} are well-behaved: ${usersRps.join(', ')} requests/s, evenly paced, each timed (a request not answered in ${timeoutMs / 1000} s fails). ` +
      `Client ${abuser} (${layout.clients[abuser - 1]!.ipv4}) is the abuser.\n`);
    out(result.realtime
      ? 'The server (as a deadline task, up to 0.9 ms of CPU in each 1 ms) and the well-behaved clients run at real-time priority, the abuser at normal priority: the figures show what the flood does to the server, not what other work on this machine does.\n'
      : `Could not give the server real-time priority (${why}): other work on this machine shows in the figures.\n`);
    for (const [i, rps] of usersRps.entries()) {
      const c = layout.clients[i]!;
      users.push(await startHttpUsers(c.netns, `http://${c.server.ipv4}:${layout.server.http.port}/`, { rate: rps, connections: 4, timeout_ms: timeoutMs, realtime: result.realtime }));
    }
    await sleep(500, signal);

    const allSamples = (): UserSample[] => users.flatMap((u) => u.samples);
    const drops = (): number[] => protections.map((p) => takeSnapshot(p).totals.dropped_packets);

    /** Measure one phase: phaseS seconds of requests, then wait until each of them has ended. */
    const measure = async (phase: PhaseResult['phase'], what: string): Promise<PhaseResult> => {
      out(`  measuring ${phaseS} s …`);
      const sluice = protections.length > 0;
      labCountReset(layout);
      const d0 = drops();
      const f0 = flood?.frames?.();
      const a = Date.now();
      await sleep(phaseS * 1000, signal);
      const b = Date.now();
      const f1 = flood?.frames?.();
      const counts = new Map(labCount(layout).sources.map((s) => [s.address, s.packets]));
      const d1 = drops();
      while (!users.every((u) => u.endedBefore(b))) await sleep(100, signal);
      const secs = (b - a) / 1000;
      const abuserAddr = layout.clients[abuser - 1]!.ipv4;
      const r: PhaseResult = {
        phase, flood: what, sluice, seconds: r3(secs), ...phaseFigures(allSamples(), a, b),
        abuser_reached_pps: Math.round((counts.get(abuserAddr) ?? 0) / secs),
        abuser_dropped_pps: sluice ? Math.round((d1[abuser - 1]! - d0[abuser - 1]!) / secs) : 0,
        abuser_offered_pps: f0 !== undefined && f1 !== undefined ? Math.round((f1 - f0) / secs) : null,
        well_behaved_dropped: sluice ? d1.slice(0, abuser - 1).reduce((s, x, i) => s + x - d0[i]!, 0) : 0,
      };
      const abuse = phase === 'baseline' ? '' : `; from the abuser${r.abuser_offered_pps !== null ? ` ${fmt(r.abuser_offered_pps)} packets/s sent,` : ''} ${fmt(r.abuser_reached_pps)}/s reached the server${sluice ? `, ${fmt(r.abuser_dropped_pps)}/s dropped by Sluice` : ''}`;
      out(` ${r.success_pct.toFixed(1)}% answered${r.p50_ms === null ? '' : `, p50 ${ms(r.p50_ms)} ms, p99 ${ms(r.p99_ms)} ms`}${abuse}\n`);
      return r;
    };

    const startFlood = async (l: Level): Promise<Flood> => {
      const describe = describeLevel(l);
      const c = layout.clients[abuser - 1]!;
      if (l.kind === 'http') {
        const ac = new AbortController();
        const procs = Array.from({ length: l.processes }, () =>
          httpLoadFrom(c.netns, `http://${c.server.ipv4}:${layout.server.http.port}/`, { durationS: 3600, concurrency: l.connections, timeoutS: 10 }, ac.signal)
            .catch((e: Error) => (ac.signal.aborted ? undefined : Promise.reject(e))));
        // A process that fails at once (not interrupted) is an error of the demo, not a weak flood.
        const early = await Promise.race([Promise.all(procs).then(() => 'ended'), sleep(300).then(() => 'running')]);
        if (early === 'ended') throw new Error('the abusive HTTP client ended at once');
        return {
          describe,
          stop: async () => {
            ac.abort();
            return (await Promise.all(procs)).filter((x): x is HttpLoadResult => x !== undefined);
          },
        };
      }
      const ac = new AbortController();
      let frames: (() => number) | undefined;
      const p = labFlood(layout, { client: abuser, pps: l.pps, seconds: 3600, proto: l.proto, dport: 80, signal: ac.signal, onFrames: (f) => (frames = f) });
      p.catch(() => undefined);
      return {
        describe,
        frames: () => frames?.() ?? 0,
        stop: async () => {
          ac.abort();
          return p.catch(() => undefined);
        },
      };
    };
    const stopFlood = async (): Promise<void> => {
      const f = flood;
      flood = undefined;
      await f?.stop();
    };

    out('\nPhase 1: no abuser, no Sluice (the baseline)\n');
    const baseline = await measure('baseline', '');
    result.baseline = baseline;
    if (baseline.p99_ms === null) throw new Error(`the lab's HTTP server answered none of the ${baseline.requests} requests of the baseline (${baseline.failed} failed, ${baseline.timed_out} timed out)`);

    // Without Sluice: each round's flood, raised until it hurts.
    const chosen = new Map<RoundKind, Level>();
    let phaseNo = 2;
    for (const kind of rounds) {
      const round: RoundResult = { flood: kind, attempts: [], hurt: false, could_not_hurt: false, with_sluice: null, held: null, notes: [] };
      result.rounds.push(round);
      const ls = levels(kind, { connections, ...(o.floodPps !== undefined ? { floodPps: o.floodPps } : {}) });
      for (const [i, l] of ls.entries()) {
        await stopFlood();
        flood = await startFlood(l);
        out(`\nPhase ${phaseNo++}: ${flood.describe} from client ${abuser}, no Sluice\n`);
        await sleep(settleS * 1000, signal);
        const r = await measure('flood', flood.describe);
        round.attempts.push(r);
        chosen.set(kind, l);
        if (hurts(r, baseline)) {
          round.hurt = true;
          break;
        }
        const why = `p99 ${ms(r.p99_ms)} ms, ${times(r, baseline)} the baseline; ${r.success_pct.toFixed(1)}% answered`;
        let note: string;
        if (i < ls.length - 1) {
          note = `This flood did not hurt the server on this machine (${why}; it hurts at ${HURT_P99_FACTOR}x or under ${HURT_SUCCESS_PCT}% answered): raising it.`;
        } else {
          round.could_not_hurt = true;
          note = `Even this flood did not hurt the server on this machine (${why}).` +
            (kind === 'packet' ? ' The kernel drops packets to a port nothing answers, or answers SYNs with cookies, cheaply; what takes a web server down is requests that cost it work (the HTTP round).' : '');
        }
        round.notes.push(note);
        out(`  ${note}\n`);
      }
    }
    await stopFlood();

    out(`\nSluice comes up on the server's end of every client's veth: token bucket, ${rate} packets/s per source address, burst ${burst}` +
      ` (the well-behaved clients send about one packet per request, ${Math.min(...usersRps)}-${Math.max(...usersRps)}/s: under it) …`);
    const u0 = Date.now();
    for (const c of layout.clients) {
      const r = await Protection.up({ iface: c.server.ifname, netns: layout.server.netns, limits: { algorithm: 'token', rate, burst } });
      protections.push(r.protection);
      if (signal?.aborted) throw new Interrupted();
    }
    result.sluice_up_seconds = r3((Date.now() - u0) / 1000);
    out(` up in ${result.sluice_up_seconds.toFixed(1)} s\n`);

    // With Sluice: the floods that hurt (or the strongest tried), the last round's first, as it
    // came last without Sluice.
    for (const round of [...result.rounds].reverse()) {
      const l = chosen.get(round.flood)!;
      flood = await startFlood(l);
      out(`\nPhase ${phaseNo++}: ${flood.describe} from client ${abuser}, Sluice on\n`);
      await sleep(settleS * 1000, signal);
      const r = await measure('sluice', flood.describe);
      round.with_sluice = r;
      round.held = holds(r, baseline);
      await stopFlood();
    }
    const users0 = users.splice(0);
    await Promise.all(users0.map((u) => u.stop()));
  } catch (e) {
    if (!(e instanceof Interrupted) && !signal?.aborted) throw e;
    result.interrupted = true;
  } finally {
    out('\nTearing down: the traffic stopped, Sluice off every interface, the lab removed.\n');
    for (const u of users) u.kill();
    await flood?.stop().catch(() => undefined);
    for (const p of protections) {
      const place = p.place;
      p.close();
      await Protection.down(place).catch(() => undefined);
    }
    await labDown({ id });
  }
  result.seconds = r3((Date.now() - t0) / 1000);
  return result;
}

const cpuText = (us: number): string => (us >= 1000 ? `${us / 1000} ms` : `${us} µs`);

export function httpSummary(r: HttpDemoResult): string {
  const base = r.baseline;
  const lines = [`Summary${r.interrupted ? ' (interrupted)' : ''}: well-behaved clients asking ${r.users_rps.join(', ')} requests/s for a page that costs ${cpuText(r.page_cpu_us)} of CPU, ` +
    `measured ${r.phase_seconds} s a phase; Sluice's limit: ${r.limit.rate} packets/s per source address, burst ${r.limit.burst}.`];
  if (!base) return lines.join('\n');
  const short = (p: PhaseResult): string => p.flood.replace(/^(HTTP|packet) flood: /, '');
  for (const round of r.rounds) {
    const rows: [string, PhaseResult][] = [['no abuser (baseline)', base]];
    for (const a of round.attempts) rows.push([`${short(a)}, no Sluice`, a]);
    if (round.with_sluice) rows.push([`${short(round.with_sluice)}, Sluice`, round.with_sluice]);
    const w = Math.max(...rows.map(([n]) => n.length));
    lines.push('', `${round.flood === 'http' ? 'HTTP' : 'Packet'} round: the well-behaved clients, per phase`,
      `  ${'phase'.padEnd(w)}  ${'answered'.padStart(8)}  ${'p50 ms'.padStart(7)}  ${'p99 ms'.padStart(7)}  ${'p99/baseline'.padStart(12)}`);
    for (const [name, p] of rows) {
      const x = p === base ? '' : times(p, base);
      lines.push(`  ${name.padEnd(w)}  ${`${p.success_pct.toFixed(1)}%`.padStart(8)}  ${ms(p.p50_ms).padStart(7)}  ${ms(p.p99_ms).padStart(7)}  ${x.padStart(12)}`);
    }
    const last = round.attempts[round.attempts.length - 1];
    if (last) {
      lines.push(round.hurt
        ? `  Without Sluice the flood hurt: ${last.success_pct.toFixed(1)}% answered, p99 ${last.p99_ms === null ? '- (none answered)' : `${times(last, base)} the baseline`}.`
        : `  Without Sluice even the strongest flood did not hurt on this machine (p99 ${times(last, base)} the baseline, ${last.success_pct.toFixed(1)}% answered).`);
    }
    const ws = round.with_sluice;
    if (ws) {
      lines.push(`  With Sluice: p99 ${times(ws, base)} the baseline, ${ws.success_pct.toFixed(1)}% answered` +
        ` (${round.held ? 'kept usable' : `NOT within ${HELD_P99_FACTOR}x and ${HELD_SUCCESS_PCT}%`}); ` +
        `from the abuser ${fmt(ws.abuser_reached_pps)} packets/s reached the server and ${fmt(ws.abuser_dropped_pps)}/s were dropped; ` +
        `the well-behaved clients lost ${fmt(ws.well_behaved_dropped)} packets to Sluice.`);
    }
  }
  lines.push('', `${r.seconds.toFixed(0)} s in all${r.sluice_up_seconds !== null ? `, ${r.sluice_up_seconds.toFixed(1)} s of it to load Sluice on ${r.users_rps.length + 1} interfaces` : ''}.`);
  return lines.join('\n');
}
