/**
 * The lab's packet generator: one valid frame, sent as a stream with a new source address per
 * frame, from a client's namespace into its veth (and so to the server's side).
 *
 * Two transmit paths:
 *  - live: BPF_PROG_TEST_RUN in live-frame mode runs bpf/lab/flood.bpf.o, which rewrites the
 *    source and redirects each frame out of the client veth. Millions of frames per second, but
 *    each run costs 10-30 ms to set up, so a paced rate is sent as one run per 100 ms slot: bursts.
 *    Runs are capped at about 100 ms because the kernel does not look at signals during one.
 *  - paced: an AF_PACKET socket and a worker thread that sends each frame at its due time. Even
 *    spacing, up to a few hundred thousand frames per second.
 * `path: 'auto'` takes paced below PACED_MAX_PPS and live at or above it (and for 'max').
 */
import { FLOOD_OBJECT, ifindex, ObjectSpec, type Program } from '../ebpf';
import { pacedSend, xdpLiveRun, type SourceRewrite } from '../ebpf/lab';
import { decodeLabFloodStats, LAB_FLOOD_STATS_SIZE } from '../generated/lab';
import { ipToBytes, pkt, type PacketBuilder } from './packet';

export { FLOOD_OBJECT };

/** Below this offered rate 'auto' paces single frames; at or above it, live-frame runs. */
export const PACED_MAX_PPS = 200_000;
/** The longest one live-frame run should last (signals wait for it). */
const SLOT_S = 0.1;

export type FloodProto = 'udp' | 'tcp-syn' | 'icmp';
export type FloodPath = 'live' | 'paced';

/** Where a flood goes from: the client's end of a veth, and the server's end it reaches. */
export interface FloodTarget {
  /** The client's namespace and its veth. */
  netns: string;
  ifname: string;
  mac: string;
  ipv4: string;
  ipv6: string;
  /** The server's end of the veth (destination MAC and addresses). */
  peerMac: string;
  peerIpv4: string;
  peerIpv6: string;
  /** First source of a multi-source flood (default: the client's own address). */
  sourceBase4?: string;
  sourceBase6?: string;
}

export interface FloodOptions {
  /** Offered frames per second, or 'max' for as fast as the path goes. */
  pps: number | 'max';
  seconds: number;
  /** Distinct sources, in sequence per CPU (default 1: the client's address). */
  sources?: number;
  /** Live path: each generator CPU sends its own `sources` (CPU c from base + c x sources), as a
   *  NIC's receive-side scaling gives each CPU its own flows; default: every CPU the same ones. */
  sourcesPerCpu?: boolean;
  /** Random spoofed sources instead of a sequence. */
  spoof?: 'random';
  /** Random sources are drawn from this prefix (default 10.0.0.0/8; for IPv6 the 32 bits after
   *  the first 32 of the client's base are random, so every source is its own /64). */
  spoofPrefix4?: string;
  /** Frame bytes as the kernel sees them (no FCS); default 64. */
  size?: number;
  proto?: FloodProto;
  family?: 4 | 6;
  /** Destination port (udp, tcp-syn); default 9 (discard). */
  dport?: number;
  /** Source port (udp, tcp-syn); default 40000. */
  sport?: number;
  path?: FloodPath | 'auto';
  /** Live path: parallel generators, one per CPU from CPU 0 (default: every online CPU, at most 2). */
  threads?: number;
  /** Live path: the CPU of each generator thread (default 0, 1, …); a CPU may appear twice. */
  cpus?: number[];
  /** Live path: called once the generator is loaded, with a reader of the frames it has sent so
   *  far (to sample a rate while it runs). */
  onFrames?: (frames: () => number) => void;
  /** Paced path: return each frame's send time. */
  record?: boolean;
  signal?: AbortSignal;
}

export interface FloodResult {
  sent: number;
  seconds: number;
  pps: number;
  path: FloodPath;
  /** What was asked for. */
  offered: number | 'max';
  frameBytes: number;
  threads: number;
  /** Paced path: send times (CLOCK_MONOTONIC ns), when asked for. */
  times?: BigUint64Array;
  /** Paced path: the latest a frame left after its due time, ns. */
  lateNsMax?: number;
}

export interface BuiltFrame {
  frame: Buffer;
  rewrite: SourceRewrite;
}

function ipv4Word(s: string): number {
  return ipToBytes(s).readUInt32BE(0);
}

/** The frame and the rule for its source address (shared by both paths). */
export function buildFrame(t: FloodTarget, o: Omit<FloodOptions, 'pps' | 'seconds'>): BuiltFrame {
  const family = o.family ?? 4;
  const proto = o.proto ?? 'udp';
  const size = o.size ?? 64;
  const dport = o.dport ?? 9;
  const sport = o.sport ?? 40000;
  for (const [what, p] of [['dport', dport], ['sport', sport]] as const) {
    if (!Number.isInteger(p) || p < 0 || p > 65535) throw new RangeError(`${what} must be 0..65535, got ${p}`);
  }
  const sources = o.sources ?? 1;
  if (!Number.isInteger(sources) || sources < 1 || sources > 0xffffffff) throw new RangeError(`sources must be 1..2^32-1, got ${sources}`);
  const base = family === 4 ? (sources > 1 ? t.sourceBase4 : undefined) ?? t.ipv4 : (sources > 1 ? t.sourceBase6 : undefined) ?? t.ipv6;
  const b: PacketBuilder = pkt().eth({ src: t.mac, dst: t.peerMac });
  if (family === 4) b.ipv4({ src: base, dst: t.peerIpv4, ttl: 64, df: true });
  else b.ipv6({ src: base, dst: t.peerIpv6, hopLimit: 64 });
  if (proto === 'udp') b.udp({ sport, dport, ...(family === 4 ? { noChecksum: true } : {}) });
  else if (proto === 'tcp-syn') b.tcp({ sport, dport, flags: 'S', seq: 1 });
  else if (family === 4) b.icmp({ id: 1, seq: 1 });
  else b.icmpv6({ id: 1, seq: 1 });
  const headers = b.build().length;
  if (!Number.isInteger(size) || size < Math.max(60, headers) || size > 1514) {
    throw new RangeError(`size must be ${Math.max(60, headers)}..1514 bytes for ${proto} over IPv${family}, got ${size}`);
  }
  // UDP and ICMP carry the rest as payload; a SYN gets Ethernet padding (not in any length).
  if (proto === 'tcp-syn') b.trailer(size - headers);
  else if (size > headers) b.payload(size - headers);
  const { buf, layers } = b.buildWithLayout();
  const ip = layers[1]!;
  const l4 = layers[2]!;
  const rewrite: SourceRewrite = { addrOff: family === 4 ? ip.offset + 12 : ip.offset + 8 + 4, ipCsumOff: family === 4 ? ip.offset + 10 : 0 };
  // Checksums over a pseudo-header change with the source; ICMPv4 and UDPv4 without checksum do not.
  if (proto === 'tcp-syn') rewrite.l4CsumOff = l4.offset + 16;
  else if (proto === 'udp' && family === 6) Object.assign(rewrite, { l4CsumOff: l4.offset + 6, l4IsUdp: true });
  else if (proto === 'icmp' && family === 6) rewrite.l4CsumOff = l4.offset + 2;
  const baseWord = buf.readUInt32BE(rewrite.addrOff!);
  if (o.spoof === 'random') {
    if (family === 4) {
      const [net, len] = (o.spoofPrefix4 ?? '10.0.0.0/8').split('/');
      const plen = Number(len);
      if (!(plen >= 0 && plen <= 32)) throw new RangeError(`bad spoof prefix ${o.spoofPrefix4}`);
      Object.assign(rewrite, { srcBase: ipv4Word(net!), srcCount: 0, srcMask: plen === 0 ? 0xffffffff : (2 ** (32 - plen) - 1) >>> 0 });
    } else {
      Object.assign(rewrite, { srcBase: baseWord, srcCount: 0, srcMask: 0xffffffff });
    }
  } else {
    // The live path's CPUs, as flood() picks them (default: CPU 0 .. threads - 1).
    const cpus = o.cpus ?? Array.from({ length: o.threads ?? 2 }, (_, cpu) => cpu);
    const span = o.sourcesPerCpu ? sources * (Math.max(...cpus) + 1) : sources;
    if (baseWord + span - 1 > 0xffffffff) throw new RangeError(`${span} sources from ${base} run past the end of the address word`);
    Object.assign(rewrite, { srcBase: baseWord, srcCount: sources, srcMask: 0, ...(o.sourcesPerCpu ? { srcPerCpu: true } : {}) });
  }
  return { frame: buf, rewrite };
}

/** The flood program for one target and frame, loaded. Close it when done. */
export async function loadFloodProgram(t: FloodTarget, rw: SourceRewrite): Promise<{ prog: Program; frames(): number; close(): void }> {
  const spec = ObjectSpec.open(FLOOD_OBJECT);
  try {
    spec.setConstants({
      out_ifindex: ifindex(t.ifname, t.netns),
      addr_off: rw.addrOff ?? 0,
      ip_csum_off: rw.ipCsumOff ?? 0,
      l4_csum_off: rw.l4CsumOff ?? 0,
      l4_is_udp: rw.l4IsUdp ? 1 : 0,
      src_base: rw.srcBase ?? 0,
      src_count: rw.srcCount ?? 1,
      src_mask: rw.srcMask ?? 0,
      src_per_cpu: rw.srcPerCpu ? 1 : 0,
    });
    const coll = await spec.load();
    const stats = coll.map('lab_flood_stats');
    return {
      prog: coll.program('lab_flood'),
      frames: () =>
        stats.lookupPerCpu(Buffer.alloc(4)).reduce((s, b) => s + Number(decodeLabFloodStats(b.subarray(0, LAB_FLOOD_STATS_SIZE)).frames), 0),
      close: () => coll.close(),
    };
  } finally {
    spec.close();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const nowS = (): number => Number(process.hrtime.bigint()) / 1e9;

/** Which path `o` takes. */
export function floodPath(o: Pick<FloodOptions, 'pps' | 'path'>): FloodPath {
  if (o.path && o.path !== 'auto') return o.path;
  return o.pps === 'max' || o.pps >= PACED_MAX_PPS ? 'live' : 'paced';
}

/** Send a flood from target t; resolves when it has run its time (or was aborted). */
export async function flood(t: FloodTarget, o: FloodOptions): Promise<FloodResult> {
  if (o.pps !== 'max' && !(o.pps > 0)) throw new RangeError(`pps must be positive or 'max', got ${o.pps}`);
  if (!(o.seconds > 0)) throw new RangeError(`seconds must be positive, got ${o.seconds}`);
  const path = floodPath(o);
  if (path === 'paced' && o.pps === 'max') throw new RangeError("the paced path needs a rate; 'max' takes the live path");
  const { frame, rewrite } = buildFrame(t, o);
  if (path === 'paced') {
    const pps = o.pps as number;
    const maxFrames = Math.ceil(pps * o.seconds);
    const r = await pacedSend(t.ifname, frame, {
      ...rewrite,
      pps,
      seconds: o.seconds,
      maxFrames,
      netns: t.netns,
      realtime: true,
      ...(o.record ? { record: true } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    const seconds = r.elapsedNs / 1e9;
    return {
      sent: r.sent, seconds, pps: r.sent / seconds, path, offered: o.pps, frameBytes: frame.length, threads: 1,
      lateNsMax: r.lateNsMax, ...(r.times ? { times: r.times } : {}),
    };
  }
  const fl = await loadFloodProgram(t, rewrite);
  try {
    o.onFrames?.(fl.frames);
    const cpus = o.cpus ?? Array.from({ length: o.threads ?? 2 }, (_, cpu) => cpu);
    const threads = cpus.length;
    const t0 = nowS();
    const sent = await Promise.all(
      cpus.map((cpu) => liveLoop(fl.prog, frame, t.netns, cpu, o.pps === 'max' ? 'max' : o.pps / threads, o.seconds, t0, o.signal)),
    );
    const seconds = nowS() - t0;
    const total = sent.reduce((a, b) => a + b, 0);
    return { sent: total, seconds, pps: total / seconds, path, offered: o.pps, frameBytes: frame.length, threads };
  } finally {
    fl.close();
  }
}

/** One generator thread's share: live-frame runs of at most about one slot each, until the time
 *  is up. Paced: one run per slot with that slot's frames, then a wait for the next slot. */
async function liveLoop(prog: Program, frame: Buffer, netns: string, cpu: number, pps: number | 'max', seconds: number, t0: number, signal?: AbortSignal): Promise<number> {
  const end = t0 + seconds;
  const run = (repeat: number): Promise<{ elapsedNs: number }> => xdpLiveRun(prog, frame, { repeat, batchSize: 256, netns, cpu });
  let sent = 0;
  if (pps === 'max') {
    let repeat = 50_000; // frames per run, adapted so that a run lasts about one slot
    for (;;) {
      const left = end - nowS();
      if (left <= 0 || signal?.aborted) break;
      const n = Math.max(1, Math.round(repeat * Math.min(1, left / SLOT_S)));
      const r = await run(n);
      sent += n;
      repeat = Math.min(Math.max(Math.round((n / (r.elapsedNs / 1e9)) * SLOT_S), 1000), 10_000_000);
    }
    return sent;
  }
  // Frames due by the end of each slot, from times relative to the start (so that rounding of
  // absolute clock values never loses a frame). A rate this machine cannot reach must not stretch
  // the flood past its time: a run takes at most what the last one showed fits in a slot, and none
  // starts once the time is up (the result's rate says what was reached).
  let fits = 50_000; // frames that fit in a slot, learnt from each run (as for max, below)
  for (let slot = 0; slot * SLOT_S < seconds && !signal?.aborted; slot++) {
    const left = end - nowS();
    if (left <= 0) break;
    const due = Math.floor(pps * Math.min(seconds, (slot + 1) * SLOT_S) + 1e-6);
    const n = Math.min(due - sent, Math.max(1000, Math.floor(fits * Math.min(1, left / SLOT_S))));
    if (n > 0) {
      const r = await run(n);
      sent += n;
      if (r.elapsedNs > 0) fits = (n / (r.elapsedNs / 1e9)) * SLOT_S;
    }
    // A run that overran its slot starts the next one at once.
    await sleep((t0 + (slot + 1) * SLOT_S - nowS()) * 1000);
  }
  return sent;
}
