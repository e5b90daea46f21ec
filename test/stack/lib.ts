/**
 * Helpers of the stack suite: what the host's own stack delivers, counted by sockets in a namespace
 * (python3: node has no raw sockets), a frame-sequence sender (AF_PACKET, for classes that need
 * several different frames in order, such as the fragments of one datagram), and a bounded TCP bulk
 * transfer between two namespaces.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STACK_OBJECT, type Collection } from '../../src/ebpf';
import { limiterMapsOf, loadDataPath } from '../../src/limiter/datapath';
import { bytesToIp, ipToBytes } from '../../src/lab/packet';
import { Limiter } from '../../src/limiter/limiter';
import { Reason } from '../../src/generated/types';
import type { TransferResult } from '../../src/lab/transfer';
import type { Testbed } from '../lib/netns';

// Bulk TCP lives in src/lab/transfer.ts (the egress benchmark measures with it too).
export { tcpTransfer, type TransferResult } from '../../src/lab/transfer';

/** The object under test: $SLUICE_STACK_OBJECT, default bpf/sluice.bpf.o. */
export { STACK_OBJECT };

/** Load the object as the agent does (sizes, constants) and wrap its maps in the real control plane. */
export async function loadSluice(maxRules = 64): Promise<{ coll: Collection; limiter: Limiter }> {
  const { coll } = await loadDataPath(STACK_OBJECT, { maxEntries: 100_000, maxRules });
  try {
    return { coll, limiter: new Limiter(limiterMapsOf(coll.maps, (name) => new Error(`map ${name} missing from ${STACK_OBJECT}`))) };
  } catch (e) {
    coll.close();
    throw e;
  }
}

export const reasonName = (r: number): string => Object.keys(Reason).find((k) => Reason[k as keyof typeof Reason] === r) ?? String(r);

/** Canonical text of an address (both sides of a comparison go through this). */
export const canon = (a: string): string => bytesToIp(ipToBytes(a.replace(/%.*$/, '')));

// ---------------------------------------------------------------------------------------------
// Receiver: UDP sockets, raw sockets, a TCP listener. Counts per (socket label, source address).
// SIGUSR1: drain every socket, print the counts as one JSON line, reset. SIGTERM: print and exit.

const RECEIVER_PY = String.raw`
import socket, select, signal, sys, json, os
udp_ports = [int(x) for x in sys.argv[1].split(',') if x]
raw4 = [int(x) for x in sys.argv[2].split(',') if x]
raw6 = [int(x) for x in sys.argv[3].split(',') if x]
tcp_port = int(sys.argv[4])
socks = []
def big(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.setblocking(False)
for p in udp_ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); big(s); s.bind(('0.0.0.0', p)); socks.append((s, 'udp4:%d' % p))
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); big(s); s.bind(('::', p)); socks.append((s, 'udp6:%d' % p))
for p in raw4:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, p); big(s); socks.append((s, 'raw4:%d' % p))
for p in raw6:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, p); big(s); socks.append((s, 'raw6:%d' % p))
listeners = []
if tcp_port:
    for fam, addr in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
        l = socket.socket(fam, socket.SOCK_STREAM)
        if fam == socket.AF_INET6: l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind((addr, tcp_port)); l.listen(4096); listeners.append(l)
counts = {}
def drain(s, label):
    while True:
        try:
            _, a = s.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            return
        k = label + ' ' + a[0].split('%')[0]
        counts[k] = counts.get(k, 0) + 1
flags = {'snap': 0, 'term': False}
def on_usr1(*_): flags['snap'] += 1
def on_term(*_): flags['term'] = True
signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGTERM, on_term)
ep = select.epoll()
byfd = {}
for s, label in socks:
    ep.register(s.fileno(), select.EPOLLIN); byfd[s.fileno()] = (s, label)
sys.stdout.write('ready\n'); sys.stdout.flush()
while True:
    try:
        ev = ep.poll(0.02)
    except InterruptedError:
        ev = []
    for fd, _ in ev:
        drain(*byfd[fd])
    asked = flags['snap']
    if asked or flags['term']:
        for s, label in socks: drain(s, label)
        sys.stdout.write(json.dumps(counts) + '\n'); sys.stdout.flush()
        counts.clear()
        flags['snap'] -= asked  # a signal that came while we answered is answered next round
        if flags['term']: sys.exit(0)
`;

export interface StackReceiverOpts {
  udpPorts: number[];
  raw4: number[];
  raw6: number[];
  tcpListen?: number;
}

export class StackReceiver {
  private out = '';
  private lines: string[] = [];
  private constructor(private readonly child: ReturnType<Testbed['spawn']>) {
    child.stdout!.on('data', (d: Buffer) => {
      this.out += d.toString();
      let i: number;
      while ((i = this.out.indexOf('\n')) >= 0) {
        this.lines.push(this.out.slice(0, i));
        this.out = this.out.slice(i + 1);
      }
    });
  }

  static async start(tb: Testbed, ns: string, o: StackReceiverOpts): Promise<StackReceiver> {
    const child = tb.spawn(ns, 'python3', ['-c', RECEIVER_PY, o.udpPorts.join(','), o.raw4.join(','), o.raw6.join(','), String(o.tcpListen ?? 0)]);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const r = new StackReceiver(child);
    const deadline = Date.now() + 10_000;
    while (!r.lines.includes('ready')) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`receiver did not start: ${err}`);
      await new Promise((res) => setTimeout(res, 20));
    }
    r.lines = [];
    return r;
  }

  /** Counts since the last snapshot: "label src" -> packets. */
  async snap(): Promise<Record<string, number>> {
    const n = this.lines.length;
    this.child.kill('SIGUSR1');
    const deadline = Date.now() + 5000;
    while (this.lines.length <= n) {
      if (Date.now() > deadline) throw new Error('receiver did not answer');
      await new Promise((res) => setTimeout(res, 5));
    }
    return JSON.parse(this.lines.splice(0).pop()!) as Record<string, number>;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.kill('SIGTERM');
    await exited;
  }
}

/** Packets one socket counted from one source. */
export function countOf(counts: Record<string, number>, label: string, src: string): number {
  const want = canon(src);
  let n = 0;
  for (const [k, v] of Object.entries(counts)) {
    const [l, a] = k.split(' ');
    if (l === label && canon(a!) === want) n += v;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Sequence sender: the frames in order from an AF_PACKET socket, paced.

const SENDER_PY = String.raw`
import socket, sys, time, json, struct, errno
ifname, pps, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
data = open(path, 'rb').read()
frames = []
i = 0
while i < len(data):
    (n,) = struct.unpack_from('<I', data, i); frames.append(data[i + 4:i + 4 + n]); i += 4 + n
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
interval = 1e9 / pps
t0 = time.perf_counter_ns()
enobufs = 0
for k, f in enumerate(frames):
    due = t0 + k * interval
    while time.perf_counter_ns() < due:
        pass
    while True:
        try:
            s.send(f); break
        except OSError as e:
            if e.errno != errno.ENOBUFS: raise
            enobufs += 1
print(json.dumps({'sent': len(frames), 'elapsedNs': time.perf_counter_ns() - t0, 'enobufs': enobufs}))
`;

export async function sendSequence(tb: Testbed, ns: string, ifname: string, frames: Buffer[], pps: number): Promise<{ sent: number; elapsedNs: number }> {
  const dir = mkdtempSync(join(tmpdir(), `sluice-stack-${tb.id}-`));
  try {
    const parts: Buffer[] = [];
    for (const f of frames) {
      const len = Buffer.alloc(4);
      len.writeUInt32LE(f.length);
      parts.push(len, f);
    }
    const path = join(dir, 'frames.bin');
    writeFileSync(path, Buffer.concat(parts));
    const r = await tb.exec(ns, 'python3', ['-c', SENDER_PY, ifname, String(pps), path], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`sequence sender failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as { sent: number; elapsedNs: number };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// UDP with GSO (UDP_SEGMENT): each send of 64,000 bytes leaves as one GSO skb of ~46 segments, so
// what tc egress sees is a packet larger than a small bucket, from a sender that does not back off
// the way TCP does: the data path alone decides what gets through.

const UDP_GSO_SEND_PY = String.raw`
import socket, sys, time, json
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, 1400)  # SOL_UDP, UDP_SEGMENT: 1,400-byte segments
buf = b'Z' * 64000
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        sent += s.sendto(buf, (host, port))
    except OSError:
        time.sleep(0.0005)  # ENOBUFS: the device queue is full
print(json.dumps({'written': sent}))
`;

const UDP_RECV_PY = String.raw`
import socket, sys, time, json, signal
port, max_s = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
s.bind(('::', port))
s.settimeout(0.2)
print('ready', flush=True)
bytes_, t0, t_last = 0, None, None
stop = [False]
signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__(0, True))
end = time.monotonic() + max_s
while not stop[0] and time.monotonic() < end:
    try:
        d = s.recv(65536)
    except socket.timeout:
        continue
    now = time.monotonic()
    if t0 is None:
        t0 = now
    t_last = now
    bytes_ += len(d)
print(json.dumps({'bytes': bytes_, 'seconds': (t_last - t0) if t0 is not None else 0}), flush=True)
`;

/** A UDP GSO flood from fromNs to toAddr:port for `seconds`; what the receiver in toNs read. */
export async function udpGsoTransfer(tb: Testbed, fromNs: string, toNs: string, toAddr: string, port: number, seconds: number): Promise<TransferResult> {
  const recv = tb.spawn(toNs, 'python3', ['-c', UDP_RECV_PY, String(port), String(seconds + 3)]);
  let out = '';
  recv.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = once(recv, 'exit');
  const deadline = Date.now() + 10_000;
  while (!out.includes('ready')) {
    if (Date.now() > deadline || recv.exitCode !== null) throw new Error('UDP receiver did not start');
    await new Promise((r) => setTimeout(r, 10));
  }
  const snd = await tb.exec(fromNs, 'python3', ['-c', UDP_GSO_SEND_PY, toAddr, String(port), String(seconds)], { timeoutMs: (seconds + 20) * 1000 });
  if (snd.code !== 0) throw new Error(`UDP GSO sender failed: ${snd.stderr}`);
  await new Promise((r) => setTimeout(r, 300)); // the last segments in flight
  recv.kill('SIGTERM');
  await exited;
  const r = JSON.parse(out.split('\n').find((l) => l.startsWith('{'))!) as { bytes: number; seconds: number };
  const w = JSON.parse(snd.stdout.split('\n').find((l) => l.startsWith('{'))!) as { written: number };
  return { ...r, written: w.written, mbps: r.seconds > 0 ? r.bytes / r.seconds / 1e6 : 0 };
}

