/**
 * Well-behaved HTTP clients: users who ask for a page at a steady pace, whatever the server does,
 * and note how long each answer took.
 *
 * startHttpUsers() runs this same file as a child inside a client's namespace (`ip netns exec NS
 * node http-users.js JSON`), so its sockets belong to that namespace. Requests are scheduled
 * open-loop, evenly spaced at `rate` per second: a slow answer does not delay the next request (as
 * it would with a client that waits for each answer before asking again, or with autocannon's
 * per-second budget, which sends each second's requests back to back at the start of the second).
 * They go over at most `connections` keep-alive connections, as a browser's; a request that finds
 * them all busy waits for one, and that wait counts in its latency. A request not answered within
 * `timeout_ms` is abandoned and counts as timed out.
 *
 * The users run until stopped. The child reports every request once it has ended, in lines of
 * JSON, with the wall-clock time it was started, so that the parent can cut one long run into
 * phases (no abuser, abuser, abuser and Sluice) without starting a process per phase.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { createInterface } from 'node:readline';

export interface HttpUsersOptions {
  /** Requests per second, evenly spaced. */
  rate: number;
  /** Keep-alive connections at most (default 4). */
  connections?: number;
  /** A request not answered within this is abandoned and counts as timed out (default 1000). */
  timeout_ms?: number;
  /** Run the child at real-time priority (SCHED_FIFO 1; needs root), with V8 single-threaded. */
  realtime?: boolean;
}

/** One request: when it was started (ms since the epoch), and how it ended. */
export interface UserSample {
  at: number;
  /** ms from start to the end of the answer; for a failed or timed-out request, how long it took to fail. */
  ms: number;
  outcome: 'ok' | 'failed' | 'timed_out';
}

interface ChildArgs extends HttpUsersOptions {
  url: string;
}

/** A line of the child's report: requests that ended, or (once stopped) the end. */
type Report =
  | { samples: [number, number, 0 | 1 | 2][]; now: number; oldest_open: number | null }
  | { done: true; requests: number; late_ms_max: number }
  | { ready: true };

const OUTCOMES = ['ok', 'failed', 'timed_out'] as const;

/** The child side: run the users here (in whatever namespace this process is) until stdin closes. */
export async function runUsersHere(a: ChildArgs, write: (line: string) => void, stopped: Promise<void>): Promise<void> {
  const connections = a.connections ?? 4;
  const timeoutMs = a.timeout_ms ?? 1000;
  const url = new URL(a.url);
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const ended: [number, number, 0 | 1 | 2][] = [];
  /** Start times (wall clock) of the requests not ended yet. */
  const open = new Set<number>();
  const wall = (t: number): number => Math.round((performance.timeOrigin + t) * 1000) / 1000;
  const report = (): void => {
    let oldest: number | null = null;
    for (const t of open) if (oldest === null || t < oldest) oldest = t;
    write(JSON.stringify({ samples: ended.splice(0), now: wall(performance.now()), oldest_open: oldest }));
  };

  /** One request, started now; records how it ended. */
  const one = (count = true): Promise<void> =>
    new Promise((resolve) => {
      const sent = performance.now();
      const at = wall(sent);
      if (count) open.add(at);
      let settled = false;
      const settle = (what: 0 | 1 | 2): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (count) {
          open.delete(at);
          ended.push([at, Math.round((performance.now() - sent) * 1000) / 1000, what]);
        }
        resolve();
      };
      const req = request({ host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port || 80, path: url.pathname + url.search, agent }, (res) => {
        res.resume();
        res.on('end', () => settle(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300 ? 0 : 1));
        res.on('error', () => settle(1));
      });
      const timer = setTimeout(() => {
        settle(2);
        req.destroy();
      }, timeoutMs);
      req.on('error', () => settle(1));
      req.end();
    });

  // Open the connections first (these requests are not reported), so that the first requests
  // measured do not pay for the handshakes.
  await Promise.all(Array.from({ length: connections }, () => one(false)));
  write(JSON.stringify({ ready: true }));
  const flush = setInterval(report, 200);

  let stop = false;
  void stopped.then(() => (stop = true));
  const interval = 1000 / a.rate;
  // A different phase per client, so that several clients do not ask at the same instants.
  const t0 = performance.now() + Math.random() * interval;
  const pending = new Set<Promise<void>>();
  let lateMax = 0;
  let requests = 0;
  for (let i = 0; !stop; i++) {
    const due = t0 + i * interval;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (stop) break;
    lateMax = Math.max(lateMax, performance.now() - due);
    requests++;
    const p = one();
    pending.add(p);
    void p.then(() => pending.delete(p));
  }
  await Promise.all(pending);
  clearInterval(flush);
  agent.destroy();
  report();
  write(JSON.stringify({ done: true, requests, late_ms_max: Math.round(lateMax * 1000) / 1000 }));
}

/** Users running in a client namespace. */
export interface HttpUsers {
  /** Every request that has ended so far, in the order reported. */
  readonly samples: UserSample[];
  /** Whether every request started before `t` (ms since the epoch) has ended and been reported. */
  endedBefore(t: number): boolean;
  /** Stop asking; resolves once every request started has ended and been reported. */
  stop(): Promise<{ requests: number; late_ms_max: number }>;
  /** Kill at once (on interrupt). */
  kill(): void;
}

/** Start users in namespace `netns` asking `url`; resolves once their connections are open. */
export async function startHttpUsers(netns: string, url: string, o: HttpUsersOptions): Promise<HttpUsers> {
  if (!(o.rate > 0) || !Number.isFinite(o.rate)) throw new RangeError(`rate must be a positive number, got ${o.rate}`);
  const args: ChildArgs = { ...o, url };
  // At real-time priority the process runs V8 without garbage-collector threads: its collector
  // otherwise waits, spinning on the main thread, for helper threads that the main thread (and
  // the server's) keep off the CPUs (measured: 0.3-0.6 s of CPU in a burst, or minutes under a flood).
  const cmd = [process.execPath, ...(o.realtime ? ['--single-threaded-gc'] : []), __filename, JSON.stringify(args)];
  const child: ChildProcess = spawn('ip', ['netns', 'exec', netns, ...(o.realtime ? ['chrt', '--fifo', '1'] : []), ...cmd], { stdio: ['pipe', 'pipe', 'pipe'] });
  const samples: UserSample[] = [];
  let reportedAt = 0;
  let oldestOpen: number | null = null;
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  let onReady: (() => void) | undefined;
  let onDone: ((r: { requests: number; late_ms_max: number }) => void) | undefined;
  const ready = new Promise<void>((r) => (onReady = r));
  const done = new Promise<{ requests: number; late_ms_max: number }>((r) => (onDone = r));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let m: Report;
    try {
      m = JSON.parse(line) as Report;
    } catch {
      return;
    }
    if ('ready' in m) onReady!();
    else if ('samples' in m) {
      for (const [at, ms, k] of m.samples) samples.push({ at, ms, outcome: OUTCOMES[k] });
      reportedAt = m.now;
      oldestOpen = m.oldest_open;
    }
    else onDone!({ requests: m.requests, late_ms_max: m.late_ms_max });
  });
  // 'close' (not 'exit'): every line the child wrote has been read by then.
  const exited = new Promise<number | null>((r) => child.once('close', (c: number | null) => r(c)));
  const failed = exited.then((code) => {
    throw new Error(`HTTP users in ${netns} ended (exit ${code}): ${err.trim() || 'no message'}`);
  });
  failed.catch(() => undefined);
  await Promise.race([ready, failed]);
  return {
    samples,
    endedBefore: (t) => reportedAt >= t && (oldestOpen === null || oldestOpen >= t),
    stop: async () => {
      child.stdin!.end();
      const r = await Promise.race([done, failed]);
      await exited;
      return r;
    },
    kill: () => void child.kill('SIGKILL'),
  };
}

if (require.main === module) {
  const stopped = new Promise<void>((resolve) => {
    process.stdin.resume();
    process.stdin.on('end', resolve);
    process.stdin.on('close', resolve);
  });
  runUsersHere(JSON.parse(process.argv[2] ?? '{}') as ChildArgs, (l) => process.stdout.write(`${l}\n`), stopped).then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
