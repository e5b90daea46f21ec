/**
 * The transmit mechanics of the lab's packet generator (the live test run of native/testrun.c, the
 * paced sender of native/lab.c), typed. Mechanism only: src/lab/flood.ts decides what to send, how
 * fast and for how long.
 */
import { native, type RawPacedSendOptions, type RawPacedSendResult, type RawTestRunOptions } from './native';
import { optNetnsPath, resolveIfindex } from './netns';
import type { Program } from './program';

export interface LiveRunOptions {
  /** Frames to run (each a fresh copy of the frame); keep to about 100 ms of work, since the
   *  kernel does not look at signals while one run lasts. */
  repeat: number;
  /** Frames per batch inside the kernel (default 64, at most 256). */
  batchSize?: number;
  /** The namespace the worker thread enters for the run (a name or a path): where the program's
   *  redirect target is resolved. */
  netns?: string;
  /** Run on a thread pinned to this CPU; the frames are then received on this CPU too. */
  cpu?: number;
}

export interface LiveRunResult {
  frames: number;
  /** Wall time of the syscall, set-up included. */
  elapsedNs: number;
}

const INT32_MAX = 0x7fffffff;
/** include/uapi/linux/bpf.h: the frames a live test run's program redirects are really sent. */
const BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1;

/**
 * One BPF_PROG_TEST_RUN in live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES): the program runs on
 * `repeat` copies of `frame`, and what it redirects is really transmitted. The worker thread enters
 * `netns` first and comes back afterwards (the process aborts if it cannot).
 */
export function xdpLiveRun(program: Program, frame: Uint8Array, o: LiveRunOptions): Promise<LiveRunResult> {
  if (!Number.isInteger(o.repeat) || o.repeat < 1) throw new TypeError(`repeat must be a positive integer, got ${o.repeat}`);
  if (o.repeat > INT32_MAX) throw new TypeError(`repeat must be 1..${INT32_MAX}`);
  const cpu = o.cpu ?? -1;
  if (!Number.isInteger(cpu) || cpu < -1) throw new TypeError(`cpu must be a non-negative integer, got ${o.cpu}`);
  if (frame.length < 14 || frame.length > 4096) throw new TypeError(`frame must be 14..4096 bytes, got ${frame.length}`);
  const opts: RawTestRunOptions = {
    repeat: o.repeat,
    flags: BPF_F_TEST_XDP_LIVE_FRAMES,
    ...(o.batchSize === undefined ? {} : { batchSize: o.batchSize }),
    netns: optNetnsPath(o.netns) ?? null,
  };
  const run = cpu < 0 ? native().progTestRun(program.fd, frame, opts) : native().progTestRunOnCpu(program.fd, frame, opts, cpu);
  return run.then((r) => ({ frames: o.repeat, elapsedNs: r.elapsedNs }));
}

/** How each frame's source is written: the 32-bit word at addrOff becomes srcBase + (i mod
 *  srcCount), or with srcCount 0 srcBase with the bits of srcMask random; the checksums at the
 *  offsets given (0: none) are updated incrementally. Values in host order. No addrOff: every
 *  frame is sent as it is. */
export type SourceRewrite = Pick<RawPacedSendOptions, 'addrOff' | 'ipCsumOff' | 'l4CsumOff' | 'l4IsUdp' | 'srcBase' | 'srcCount' | 'srcMask'> & {
  /** The live path's generator only (one paced sender is one thread): each CPU its own sequence. */
  srcPerCpu?: boolean;
};

export interface PacedSendOptions extends SourceRewrite {
  /** Frames per second: frame i is due at start + i / pps. */
  pps: number;
  /** Stop after this many frames (default: no limit). */
  maxFrames?: number;
  /** Stop after this long, in seconds (default: no limit). */
  seconds?: number;
  /** Return each frame's send time (needs maxFrames). */
  record?: boolean;
  /** Send from a SCHED_FIFO thread, so that due times are kept while the CPUs are busy. */
  realtime?: boolean;
  /** The namespace of the interface (the socket is created there). */
  netns?: string;
  /** Send from a thread pinned to this CPU. */
  cpu?: number;
  /** Stops the sender within one frame interval (or 10 ms while it sleeps). */
  signal?: AbortSignal;
}

export interface PacedSendResult extends Omit<RawPacedSendResult, 'times'> {
  /** Send time of each frame (CLOCK_MONOTONIC ns) when `record` was set. */
  times?: BigUint64Array;
}

/**
 * Send `frame` at an even rate from an AF_PACKET socket bound to `iface`, one frame per due time,
 * on a worker thread that sleeps and then spins to each due time.
 */
export async function pacedSend(iface: number | string, frame: Uint8Array, o: PacedSendOptions): Promise<PacedSendResult> {
  const stop = new Uint8Array(new SharedArrayBuffer(1));
  const onAbort = (): void => {
    Atomics.store(stop, 0, 1);
  };
  if (o.signal?.aborted) onAbort();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  const { signal: _s, netns, cpu, seconds, ...rest } = o;
  // Without a rewrite, every frame goes out as given: the native sender always writes a word, so
  // it is given the frame's own first word (left alone, it would write 0 over the destination MAC).
  const same: SourceRewrite = rest.addrOff === undefined && frame.length >= 4
    ? { addrOff: 0, srcBase: Buffer.from(frame.buffer, frame.byteOffset, 4).readUInt32BE(0), srcCount: 1 } : {};
  const raw: RawPacedSendOptions = { ...rest, ...same, ...(seconds !== undefined ? { durationNs: Math.round(seconds * 1e9) } : {}) };
  try {
    const ifidx = resolveIfindex(iface, netns);
    const r = await native().labPacedSend(optNetnsPath(netns) ?? null, ifidx, frame, raw, stop, cpu ?? -1);
    const { times, ...out } = r;
    if (!times) return out;
    const t = new BigUint64Array(times.length / 8); // a copy: the Buffer need not be 8-byte aligned
    new Uint8Array(t.buffer).set(times);
    return { ...out, times: t };
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
}

/** GRO on or off (`ethtool -K IFACE gro on|off`). A veth runs NAPI only with GRO or an XDP
 *  program on it, and frames redirected into its peer are lost without NAPI. */
export function setGro(ifname: string, on: boolean, opts: { netns?: string } = {}): void {
  native().labSetGro(ifname, on, optNetnsPath(opts.netns));
}
