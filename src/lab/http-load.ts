/**
 * HTTP load from a client namespace to the lab's server, with autocannon.
 *
 * httpLoad() runs this same file as a child inside the client's namespace (`ip netns exec NS node
 * http-load.js JSON`): the child's sockets then belong to that namespace. The child prints one JSON
 * line with the summary. autocannon counts errors, timeouts and non-2xx answers; the wall time and
 * the latency percentiles come from its per-response events, because its own duration is rounded
 * up to its one-second sampling tick.
 */
import { spawn } from 'node:child_process';

export interface HttpLoadOptions {
  /** Requests in total (or run for durationS). */
  requests?: number;
  /** Seconds to run, each connection in a request loop, instead of a number of requests. */
  durationS?: number;
  /** Connections open at once. */
  concurrency: number;
  /** Seconds before a request counts as timed out (default 5). */
  timeoutS?: number;
  /** Called about every 250 ms with the requests answered (or failed) so far. */
  onProgress?: (done: number, total: number) => void;
}

export interface HttpLoadResult {
  url: string;
  /** Requests asked for (with durationS: the requests answered or failed). */
  requests: number;
  /** Answered with a 2xx status. */
  completed: number;
  /** Connection errors and non-2xx answers (timeouts not included). */
  failed: number;
  timed_out: number;
  seconds: number;
  requests_per_second: number;
  /** Milliseconds. */
  latency_ms: { min: number; p50: number; p90: number; p99: number; max: number; mean: number };
}

interface ChildArgs extends HttpLoadOptions {
  url: string;
}

/** The part of autocannon's API used here (it ships no type declarations). */
interface AutocannonResult {
  '2xx': number;
  non2xx: number;
  /** Every failed request, timeouts included. */
  errors: number;
  timeouts: number;
}
interface AutocannonInstance {
  on(event: 'response', f: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  on(event: 'reqError', f: () => void): void;
}
type Autocannon = (
  o: { url: string; amount?: number; duration?: number; connections: number; timeout: number },
  done: (err: Error | null, r: AutocannonResult) => void,
) => AutocannonInstance;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The child side: run the load here (in whatever namespace this process is) and summarise. */
export async function runLoadHere(a: ChildArgs): Promise<HttpLoadResult> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const autocannon = require('autocannon') as Autocannon;
  const latencies: number[] = [];
  let t0 = 0;
  let last = 0;
  const summary = await new Promise<AutocannonResult>((resolve, reject) => {
    t0 = performance.now();
    const inst = autocannon(
      { url: a.url, ...(a.durationS !== undefined ? { duration: a.durationS } : { amount: a.requests }), connections: a.concurrency, timeout: a.timeoutS ?? 5 },
      (err, r) => (err ? reject(err) : resolve(r)),
    );
    let done = 0;
    let shown = 0;
    // Progress for the parent on stderr ("progress DONE TOTAL"), at most four times a second.
    const tell = (): void => {
      const now = performance.now();
      if (now - shown < 250) return;
      shown = now;
      process.stderr.write(`progress ${done} ${a.requests}\n`);
    };
    inst.on('response', (_client, _status, _bytes, ms) => {
      latencies.push(ms);
      last = performance.now();
      done++;
      tell();
    });
    inst.on('reqError', () => {
      last = performance.now();
      done++;
      tell();
    });
  });
  latencies.sort((x, y) => x - y);
  const seconds = Math.max(last - t0, 1e-3) / 1000;
  const completed = summary['2xx'];
  const timedOut = summary.timeouts;
  const round = (x: number): number => Math.round(x * 1000) / 1000;
  return {
    url: a.url,
    requests: a.requests ?? completed + summary.errors + summary.non2xx,
    completed,
    failed: Math.max(0, summary.errors - timedOut) + summary.non2xx,
    timed_out: timedOut,
    seconds: round(seconds),
    requests_per_second: Math.round(completed / seconds),
    latency_ms: {
      min: round(latencies[0] ?? 0),
      p50: round(percentile(latencies, 50)),
      p90: round(percentile(latencies, 90)),
      p99: round(percentile(latencies, 99)),
      max: round(latencies[latencies.length - 1] ?? 0),
      mean: round(latencies.reduce((s, x) => s + x, 0) / Math.max(1, latencies.length)),
    },
  };
}

/** Run the load from inside namespace `netns` against `url`. */
export async function httpLoadFrom(netns: string, url: string, o: HttpLoadOptions, signal?: AbortSignal): Promise<HttpLoadResult> {
  if ((o.requests === undefined) === (o.durationS === undefined)) throw new RangeError('give either requests or durationS');
  if (o.requests !== undefined && (!Number.isInteger(o.requests) || o.requests < 1)) throw new RangeError(`requests must be a positive integer, got ${o.requests}`);
  if (o.durationS !== undefined && (!Number.isInteger(o.durationS) || o.durationS < 1)) throw new RangeError(`durationS must be a positive whole number of seconds, got ${o.durationS}`);
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${o.concurrency}`);
  const { onProgress, ...rest } = o;
  const args: ChildArgs = { ...rest, url };
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, __filename, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const onAbort = (): void => void child.kill('SIGKILL');
  signal?.addEventListener('abort', onAbort);
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    const text = d.toString();
    for (const m of text.matchAll(/^progress (\d+) (\d+)$/gm)) onProgress?.(Number(m[1]), Number(m[2]));
    err += text.replace(/^progress \d+ \d+\n/gm, '');
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  signal?.removeEventListener('abort', onAbort);
  if (signal?.aborted) throw new Error('interrupted');
  const line = out.split('\n').find((l) => l.startsWith('{'));
  if (code !== 0 || !line) throw new Error(`HTTP load in ${netns} failed (exit ${code}): ${err.trim() || out.trim()}`);
  return JSON.parse(line) as HttpLoadResult;
}

if (require.main === module) {
  runLoadHere(JSON.parse(process.argv[2] ?? '{}') as ChildArgs).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
