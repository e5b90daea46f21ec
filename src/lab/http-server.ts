/**
 * The lab's HTTP server, run inside the server namespace by `sluice lab up`:
 *   node dist/src/lab/http-server.js PORT [PAGE_CPU_US]
 * Answers every request on every address of the namespace (IPv4 and IPv6). With PAGE_CPU_US
 * (default 0) each answer first costs that many microseconds of CPU, spent hashing (FNV-1a over a
 * counter) as a small dynamic page spends it on work: not a sleep, so requests wait for the CPU
 * and a flood of them queues up, as on a real single-process server. The cost is measured on the
 * process's own CPU clock, so it stays the same when other processes take the CPU in between (a
 * busy machine makes a page slower, not cheaper). Prints "listening …" once it accepts
 * connections; runs until it is killed (`lab down`).
 */
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 80);
const pageCpuUs = Number(process.argv[3] ?? 0);

/** `rounds` steps of FNV-1a over a counter, from `h`: the page's work. Integer arithmetic only,
 *  so the page allocates nothing and the garbage collector has no part in its cost. */
function hash(rounds: number, h: number): number {
  for (let i = 0; i < rounds; i++) h = Math.imul(h ^ (i & 0xff), 0x01000193);
  return h >>> 0;
}

/** The process's CPU time in microseconds (getrusage: exact, not sampled at the tick). */
function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** Rounds per microsecond of CPU, learnt from the pages served so far. */
let roundsPerUs = 500;

/** Hash until `us` microseconds of the process's CPU are spent, reading the clock about every
 *  tenth of that (or more often while the speed is being learnt). */
function page(us: number): number {
  const start = cpuUs();
  let h = 0x811c9dc5;
  let rounds = 0;
  for (;;) {
    const used = cpuUs() - start;
    if (used >= us) {
      if (rounds > 0 && used > 0) roundsPerUs = 0.8 * roundsPerUs + 0.2 * (rounds / used);
      return h;
    }
    const n = Math.max(1, Math.ceil(Math.min(us - used, us / 10) * roundsPerUs));
    h = hash(n, h);
    rounds += n;
  }
}

const plain = Buffer.from('sluice lab: ok\n');
const server = createServer((req, res) => {
  req.resume();
  const body = pageCpuUs > 0 ? Buffer.from(`sluice lab: ok ${page(pageCpuUs).toString(16).padStart(8, '0')}\n`) : plain;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 30_000;
// '::' with ipv6Only false takes IPv4 too (as IPv4-mapped addresses).
server.listen({ port, host: '::', ipv6Only: false }, () => {
  process.stdout.write(`listening on port ${port}, page cpu ${pageCpuUs} us\n`);
});
// The parent closes its end of stdout after "listening": never die of EPIPE for a log line.
process.stdout.on('error', () => undefined);
