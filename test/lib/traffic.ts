/**
 * Test traffic between namespaces of a Testbed: a UDP sender that sends N datagrams (optionally
 * paced) and a UDP receiver that counts what arrives. Both run as child processes inside their
 * namespace (`ip netns exec`, fine here since no pins are involved).
 */
import { once } from 'node:events';
import type { Testbed } from './netns';

const RECEIVER = `
const s = require('dgram').createSocket(process.argv[3] === '6' ? 'udp6' : 'udp4');
let n = 0;
s.on('message', () => n++);
s.bind(Number(process.argv[2]), () => process.stdout.write('ready\\n'));
const end = () => { process.stdout.write(JSON.stringify({ received: n }) + '\\n'); process.exit(0); };
process.on('SIGTERM', end);
setTimeout(end, Number(process.argv[1]));
`;

// N datagrams; pps 0: as fast as the socket takes them (batches of 100 awaited, nothing dropped locally).
const SENDER = `
const [dst, n, pps, port] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const s = require('dgram').createSocket(dst.includes(':') ? 'udp6' : 'udp4');
const buf = Buffer.alloc(32);
let sent = 0;
const t0 = process.hrtime.bigint();
const send = () => new Promise((res, rej) => s.send(buf, port, dst, (e) => e ? rej(e) : res()));
(async () => {
  while (sent < n) {
    if (pps > 0) {
      const due = Number(process.hrtime.bigint() - t0) / 1e9 * pps;
      if (sent >= due) { await new Promise((r) => setTimeout(r, 1)); continue; }
      const batch = Math.min(Math.ceil(due - sent), n - sent);
      await Promise.all(Array.from({ length: batch }, send));
      sent += batch;
    } else {
      const batch = Math.min(100, n - sent);
      await Promise.all(Array.from({ length: batch }, send));
      sent += batch;
    }
  }
  process.stdout.write(JSON.stringify({ sent, ms: Number(process.hrtime.bigint() - t0) / 1e6 }) + '\\n');
  s.close();
})();
`;

export interface Receiver {
  /** Stop early (or wait for the end) and get the count. */
  result(): Promise<{ received: number }>;
}

/** Start a UDP receiver in ns on port, for durationMs at most. Resolves once it is listening. */
export async function udpReceiver(tb: Testbed, ns: string, port: number, durationMs: number, family: 4 | 6 = 4): Promise<Receiver> {
  const child = tb.spawn(ns, process.execPath, ['-e', RECEIVER, String(durationMs), String(port), String(family)]);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  while (!out.includes('ready')) await once(child.stdout!, 'data');
  const exited = once(child, 'exit');
  return {
    async result() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      return JSON.parse(out.split('\n').find((l) => l.startsWith('{'))!) as { received: number };
    },
  };
}

/** Send n datagrams from ns to dst:port; pps 0 = as fast as possible. */
export async function udpSend(tb: Testbed, ns: string, dst: string, n: number, pps = 0, port = 9000): Promise<{ sent: number; ms: number }> {
  const r = await tb.exec(ns, process.execPath, ['-e', SENDER, dst, String(n), String(pps), String(port)], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`sender failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { sent: number; ms: number };
}
