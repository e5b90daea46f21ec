/**
 * The only importer of the native addon (build/Release/sluice_native.node).
 *
 * The addon mirrors libbpf 1:1; this file gives it types and turns its errors
 * into the classes of errors.ts. It is loaded on first use, so that importing
 * src/ebpf costs nothing where the addon is not needed.
 */
import { fromNative, NativeMissingError } from './errors';
import { addonPath } from './paths';

/** Opaque handle of a ring buffer consumer (a napi external). */
export interface RingbufHandle {
  readonly __brand: 'sluice.RingbufHandle';
}

/** Opaque handle of an opened bpf_object (a napi external). */
export interface ObjectHandle {
  readonly __brand: 'sluice.ObjectHandle';
}

export interface RawProgramSpec {
  name: string;
  section: string;
  type: number;
  expectedAttachType: number;
  autoload: boolean;
  insnCount: number;
}

export interface RawMapSpec {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  internal: boolean;
  initialValueSize: number;
}

export interface RawDatasecVar {
  name: string;
  offset: number;
  size: number;
}

export interface RawLoadOptions {
  logLevel?: number;
  logSize?: number;
  logSizeMax?: number;
}

export interface RawProgInfo {
  id: number;
  name: string;
  type: number;
  tag: string;
  verifiedInsns: number;
  runTimeNs: number;
  runCnt: number;
  recursionMisses: number;
  nrMapIds: number;
  mapIds: number[];
  loadTime: number;
  createdByUid: number;
  btfId: number;
  xlatedProgLen: number;
  jitedProgLen: number;
  gplCompatible: boolean;
}

export interface RawMapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  ifindex: number;
  btfId: number;
  mapExtra: number;
}

export interface RawLinkInfo {
  id: number;
  type: number;
  progId: number;
  ifindex?: number;
  netnsIno?: number;
  attachType?: number;
}

export interface RawBatch {
  count: number;
  keys: Buffer;
  values: Buffer;
  nextBatch: Buffer;
  done: boolean;
}

export interface RawTestRunOptions {
  repeat?: number;
  ctx?: Uint8Array;
  flags?: number;
  batchSize?: number;
  dataSizeOut?: number;
  /** A network namespace (a path) the running thread enters for the run; null: the current one. */
  netns?: string | null;
}

export interface RawTestRunResult {
  retval: number;
  /** Average per repetition, ns. */
  duration: number;
  /** null for BPF_F_TEST_XDP_LIVE_FRAMES runs. */
  dataOut: Buffer | null;
  /** The size the kernel reported; larger than dataOut when the buffer was too small. */
  dataSizeOut: number;
  /** Wall time of the test-run syscall, set-up included. */
  elapsedNs: number;
  ctxOut?: Buffer;
}

export interface RawXdpQuery {
  progId: number;
  drvProgId: number;
  hwProgId: number;
  skbProgId: number;
  attachMode: number;
}

export interface RawTcFilter {
  handle: number;
  priority: number;
  progId: number;
}

export interface RawPacedSendOptions {
  pps: number;
  maxFrames?: number;
  durationNs?: number;
  record?: boolean;
  realtime?: boolean;
  addrOff?: number;
  ipCsumOff?: number;
  l4CsumOff?: number;
  l4IsUdp?: boolean;
  srcBase?: number;
  srcCount?: number;
  srcMask?: number;
}

export interface RawPacedSendResult {
  sent: number;
  /** CLOCK_MONOTONIC ns (the clock of bpf_ktime_get_ns and process.hrtime) of the first due time. */
  startNs: number;
  elapsedNs: number;
  /** The latest any frame left after its due time. */
  lateNsMax: number;
  /** Times the device refused frames for lack of room (they were sent again, late). */
  enobufs: number;
  /** The sender ran with SCHED_FIFO. */
  realtime: boolean;
  /** Send time of each frame (u64 CLOCK_MONOTONIC ns, host order) when asked for. */
  times: Buffer | null;
}

/** Every function of the addon. A trailing `netns` is a namespace path entered for the call only. */
export interface NativeAddon {
  libbpfVersion(): string;

  // bpf_object
  objectOpenFile(path: string): ObjectHandle;
  objectClose(h: ObjectHandle): void;
  objectPrograms(h: ObjectHandle): RawProgramSpec[];
  objectMaps(h: ObjectHandle): RawMapSpec[];
  objectDatasec(h: ObjectHandle, section: string): RawDatasecVar[];
  objectLoad(h: ObjectHandle, opts?: RawLoadOptions): Promise<void>;
  mapInitialValue(h: ObjectHandle, mapName: string): Buffer | null;
  mapSetInitialValue(h: ObjectHandle, mapName: string, bytes: Uint8Array): void;
  mapSetMaxEntries(h: ObjectHandle, mapName: string, n: number): void;
  mapReuseFd(h: ObjectHandle, mapName: string, fd: number): void;

  // ring buffers
  ringbufOpen(mapFd: number): RingbufHandle;
  ringbufPoll(h: RingbufHandle, timeoutMs?: number, maxRecords?: number): Promise<Buffer[]>;
  ringbufClose(h: RingbufHandle): void;
  programSetAutoload(h: ObjectHandle, progName: string, autoload: boolean): void;
  programSetType(h: ObjectHandle, progName: string, type: number): void;
  programSetExpectedAttachType(h: ObjectHandle, progName: string, attachType: number): void;
  programFd(h: ObjectHandle, name: string): number;
  mapFd(h: ObjectHandle, name: string): number;
  /** Tests only: the next objectOpenFile fails as if tagging its handle had failed. */
  testFailNextTag(): void;
  /** Close the object and drop its settings (and the map fds mapReuseFd duplicated); the handle is spent. */
  objectFree(h: ObjectHandle): void;

  // maps
  mapLookupElem(fd: number, key: Uint8Array | null, valueLen: number, flags?: number): Buffer | null;
  mapUpdateElem(fd: number, key: Uint8Array | null, value: Uint8Array, flags?: number): void;
  mapDeleteElem(fd: number, key: Uint8Array): boolean;
  mapGetNextKey(fd: number, key: Uint8Array | null, keyLen: number): Buffer | null;
  mapLookupAndDeleteElem(fd: number, key: Uint8Array | null, valueLen: number): Buffer | null;
  mapLookupBatch(
    fd: number,
    inBatch: Uint8Array | null,
    keyLen: number,
    valueLen: number,
    count: number,
    opts?: { elemFlags?: number; delete?: boolean; keys?: Buffer; values?: Buffer },
  ): RawBatch;
  mapDeleteBatch(fd: number, keys: Uint8Array, count: number): number;
  mapUpdateBatch(fd: number, keys: Uint8Array, values: Uint8Array, count: number, opts?: { elemFlags?: number; flags?: number }): number;
  mapCreate(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, opts?: { flags?: number; innerMapFd?: number }): number;

  // pins, info, ids
  objPin(fd: number, path: string): void;
  objGet(path: string, fileFlags?: number): number;
  progGetInfo(fd: number): RawProgInfo;
  mapGetInfo(fd: number): RawMapInfo;
  linkGetInfo(fd: number): RawLinkInfo;
  progGetNextId(startId?: number): number | null;
  mapGetNextId(startId?: number): number | null;
  linkGetNextId(startId?: number): number | null;
  progGetFdById(id: number): number;
  mapGetFdById(id: number): number;
  linkGetFdById(id: number): number;

  // links
  linkCreate(progFd: number, targetFd: number, attachType: number, flags?: number, netns?: string): number;
  linkUpdate(linkFd: number, newProgFd: number, oldProgFd?: number): void;
  linkDetach(linkFd: number): void;

  // misc
  closeFd(fd: number): void;
  dupFd(fd: number): number;
  numPossibleCpus(): number;
  enableStats(type?: number): number;
  /** flock(2); false when op has LOCK_NB and the lock is held elsewhere. */
  flock(fd: number, op: number): boolean;
  /** One datagram to a Unix socket (address: sun_path's bytes, a leading NUL for an abstract name); bytes sent. */
  unixDatagramSend(address: Uint8Array, message: Uint8Array): number;

  // test runs
  progTestRun(fd: number, data: Uint8Array, opts?: RawTestRunOptions): Promise<RawTestRunResult>;
  progTestRunOnCpu(fd: number, data: Uint8Array, opts: RawTestRunOptions | undefined, cpu: number): Promise<RawTestRunResult>;
  /** Frames back to back, their lengths; n int32: each retval, or -errno of its run. */
  progTestRunBatch(fd: number, frames: Uint8Array, lens: Uint32Array): Promise<Buffer>;

  // netlink XDP, tc
  xdpAttach(ifindex: number, progFd: number, flags: number, oldProgFd?: number, netns?: string): void;
  xdpDetach(ifindex: number, flags: number, oldProgFd?: number, netns?: string): void;
  xdpQuery(ifindex: number, flags?: number, netns?: string): RawXdpQuery;
  tcHookCreate(ifindex: number, attachPoint: number, netns?: string): boolean;
  tcHookDestroy(ifindex: number, attachPoint: number, netns?: string): void;
  tcAttach(
    ifindex: number,
    attachPoint: number,
    progFd: number,
    opts: { handle?: number; priority?: number; flags?: number },
    netns?: string,
  ): RawTcFilter;
  tcDetach(ifindex: number, attachPoint: number, opts: { handle: number; priority: number }, netns?: string): void;
  tcQuery(ifindex: number, attachPoint: number, opts: { handle: number; priority: number }, netns?: string): RawTcFilter | null;

  // system
  ifNameToIndex(name: string, netns?: string): number;
  ifIndexToName(ifindex: number, netns?: string): string;
  netnsEnter(path: string): number;
  netnsReturn(savedFd: number): void;

  // lab (native/lab.c)
  labPacedSend(netns: string | null, ifindex: number, frame: Uint8Array, opts: RawPacedSendOptions, stop: Uint8Array, cpu: number): Promise<RawPacedSendResult>;
  labSetGro(ifname: string, on: boolean, netns?: string): void;
}

export { addonPath };

function wrap(raw: Record<string, unknown>): NativeAddon {
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(raw)) {
    if (typeof f !== 'function') continue;
    out[name] = (...args: unknown[]): unknown => {
      let r: unknown;
      try {
        r = f(...args);
      } catch (e) {
        throw fromNative(e);
      }
      return r instanceof Promise ? r.catch((e: unknown) => Promise.reject(fromNative(e))) : r;
    };
  }
  return out as unknown as NativeAddon;
}

let addon: NativeAddon | undefined;

/** The addon, loaded on first use. Throws NativeMissingError when it is not built. */
export function native(): NativeAddon {
  if (addon) return addon;
  const path = addonPath();
  let raw: Record<string, unknown>;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    raw = require(path) as Record<string, unknown>;
  } catch (e) {
    throw new NativeMissingError(
      `cannot load the native addon at ${path}: ${(e as Error).message}. ` +
        'Build it with `npm install` or `npm run build:native` (needs libbpf-dev, libelf-dev, zlib1g-dev).',
      e,
    );
  }
  addon = wrap(raw);
  return addon;
}
