/**
 * Bulk TCP between two namespaces of a testbed, as the stack tests and the egress benchmark
 * measure it (node on both ends, optionally pinned to one CPU).
 */
import { once } from 'node:events';
import type { Testbed } from './testbed';

// ---------------------------------------------------------------------------------------------
// TCP bulk transfer: a receiver in one namespace, a sender in the other; bounded by time and bytes.

const TCP_RECV_JS = String.raw`
const net = require('net');
const [port, maxMs] = [Number(process.argv[1]), Number(process.argv[2])];
let bytes = 0, t0 = 0n, tLast = 0n, done = false;
const finish = () => {
  if (done) return; done = true;
  const seconds = t0 ? Number(tLast - t0) / 1e9 : 0;
  process.stdout.write(JSON.stringify({ bytes, seconds }) + '\n');
  process.exit(0);
};
const srv = net.createServer((s) => {
  t0 = process.hrtime.bigint(); tLast = t0;
  s.on('data', (d) => { bytes += d.length; tLast = process.hrtime.bigint(); });
  s.on('error', () => {});
  s.on('close', finish);
});
srv.listen(port, '::', () => process.stdout.write('ready\n'));
setTimeout(finish, maxMs);
process.on('SIGTERM', finish);
`;

const TCP_SEND_JS = String.raw`
const net = require('net');
const [host, port, seconds, maxBytes] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const chunk = Buffer.alloc(256 * 1024, 0x5a);
let written = 0;
const s = net.connect({ host, port });
s.on('error', () => {});
let timer;
const stop = () => { clearTimeout(timer); process.stdout.write(JSON.stringify({ written }) + '\n'); s.resetAndDestroy(); setTimeout(() => process.exit(0), 50); };
s.on('connect', () => {
  timer = setTimeout(stop, seconds * 1000);
  const pump = () => {
    while (written < maxBytes) {
      written += chunk.length;
      if (!s.write(chunk)) { s.once('drain', pump); return; }
    }
    stop();
  };
  pump();
});
`;

export interface TransferResult {
  /** Bytes the receiving application read. */
  bytes: number;
  /** From the connection's arrival to the last byte read. */
  seconds: number;
  /** Bytes the sender handed to its socket. */
  written: number;
  mbps: number;
}

/** `seconds` of bulk TCP from fromNs to (toNs, toAddr):port, at most maxBytes. */
export async function tcpTransfer(tb: Testbed, fromNs: string, toNs: string, toAddr: string, port: number, seconds: number, maxBytes = 4e9, cpu?: number): Promise<TransferResult> {
  // Pinned to one CPU, sender, receiver and the softirq work between them share it: the transfer's
  // speed no longer depends on where the scheduler happens to place the two processes.
  const pin = (args: string[]): [string, string[]] => (cpu === undefined ? [process.execPath, args] : ['taskset', ['-c', String(cpu), process.execPath, ...args]]);
  const recv = tb.spawn(toNs, ...pin(['-e', TCP_RECV_JS, String(port), String(Math.round((seconds + 3) * 1000))]));
  let out = '';
  recv.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = once(recv, 'exit');
  const deadline = Date.now() + 10_000;
  while (!out.includes('ready')) {
    if (Date.now() > deadline || recv.exitCode !== null) throw new Error('TCP receiver did not start');
    await new Promise((r) => setTimeout(r, 10));
  }
  const snd = await tb.exec(fromNs, ...pin(['-e', TCP_SEND_JS, toAddr, String(port), String(seconds), String(maxBytes)]), { timeoutMs: (seconds + 20) * 1000 });
  if (snd.code !== 0) throw new Error(`TCP sender failed: ${snd.stderr}`);
  await exited;
  const r = JSON.parse(out.split('\n').find((l) => l.startsWith('{'))!) as { bytes: number; seconds: number };
  const w = JSON.parse(snd.stdout.split('\n').find((l) => l.startsWith('{'))!) as { written: number };
  return { ...r, written: w.written, mbps: r.seconds > 0 ? r.bytes / r.seconds / 1e6 : 0 };
}
