/**
 * The user-space peer of the throughput benchmark: what a team would write instead of Sluice. A
 * UDP server with a per-source token bucket (rate a second, burst), at most `max` sources tracked
 * (the oldest forgotten first: a Map keeps insertion order). A packet within its source's bucket
 * is "handled" (counted as passed); the rest are dropped. Run inside the server's namespace:
 *
 *   node dist/bench/node-limiter.js PORT RATE BURST MAX
 *
 * Prints "listening" once bound. Each line "report" on stdin is answered with one JSON line on
 * stdout: {"passed","dropped","sources"}. Runs until stdin closes or it is killed.
 */
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const [port, rate, burst, max] = process.argv.slice(2).map(Number) as [number, number, number, number];
const buckets = new Map<string, { tokens: number; last: number }>();
let passed = 0;
let dropped = 0;

const sock = createSocket('udp4');
sock.on('message', (_msg, rinfo) => {
  const now = performance.now() / 1000;
  let b = buckets.get(rinfo.address);
  if (!b) {
    if (buckets.size >= max) buckets.delete(buckets.keys().next().value!);
    b = { tokens: burst, last: now };
    buckets.set(rinfo.address, b);
  } else {
    b.tokens = Math.min(burst, b.tokens + (now - b.last) * rate);
    b.last = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    passed++;
  } else {
    dropped++;
  }
});
sock.bind(port, '0.0.0.0', () => process.stdout.write('listening\n'));

createInterface({ input: process.stdin })
  .on('line', (l) => {
    if (l.trim() === 'report') process.stdout.write(`${JSON.stringify({ passed, dropped, sources: buckets.size })}\n`);
  })
  .on('close', () => process.exit(0));
process.stdout.on('error', () => process.exit(0));
