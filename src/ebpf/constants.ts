/** Numbers of the kernel's BPF UAPI (linux/bpf.h, linux/if_link.h) that the binding uses. */

export const MapType = {
  Unspec: 0,
  Hash: 1,
  Array: 2,
  ProgArray: 3,
  PerfEventArray: 4,
  PerCpuHash: 5,
  PerCpuArray: 6,
  StackTrace: 7,
  CgroupArray: 8,
  LruHash: 9,
  LruPerCpuHash: 10,
  LpmTrie: 11,
  ArrayOfMaps: 12,
  HashOfMaps: 13,
  DevMap: 14,
  SockMap: 15,
  CpuMap: 16,
  XskMap: 17,
  SockHash: 18,
  CgroupStorage: 19,
  ReuseportSockArray: 20,
  PerCpuCgroupStorage: 21,
  Queue: 22,
  Stack: 23,
  SkStorage: 24,
  DevMapHash: 25,
  StructOps: 26,
  RingBuf: 27,
  InodeStorage: 28,
  TaskStorage: 29,
  BloomFilter: 30,
  UserRingBuf: 31,
} as const;

/** Map types whose values exist once per possible CPU. */
export const PER_CPU_MAP_TYPES: ReadonlySet<number> = new Set([
  MapType.PerCpuHash,
  MapType.PerCpuArray,
  MapType.LruPerCpuHash,
  MapType.PerCpuCgroupStorage,
]);

export const ProgramType = {
  Unspec: 0,
  SocketFilter: 1,
  Kprobe: 2,
  SchedCls: 3,
  SchedAct: 4,
  Tracepoint: 5,
  Xdp: 6,
  RawTracepoint: 17,
  Tracing: 26,
  Syscall: 31,
} as const;

export const AttachType = {
  Xdp: 37,
} as const;

export const LinkType = {
  Unspec: 0,
  RawTracepoint: 1,
  Tracing: 2,
  Cgroup: 3,
  Iter: 4,
  Netns: 5,
  Xdp: 6,
  PerfEvent: 7,
  KprobeMulti: 8,
  StructOps: 9,
} as const;

/** Flags of a map element update. */
export const UpdateFlags = {
  Any: 0,
  NoExist: 1,
  Exist: 2,
  Lock: 4,
} as const;

/** XDP_FLAGS_* for netlink attach and for bpf_link_create(BPF_XDP). */
export const XdpFlags = {
  UpdateIfNoExist: 1,
  SkbMode: 2,
  DrvMode: 4,
  HwMode: 8,
  Replace: 16,
} as const;

/** XDP_ATTACHED_* as reported by bpf_xdp_query. */
export const XdpAttached = {
  None: 0,
  Drv: 1,
  Skb: 2,
  Hw: 3,
  Multi: 4,
} as const;

/** Flags of BPF_PROG_TEST_RUN. */
export const TestRunFlags = {
  RunOnCpu: 1,
  XdpLiveFrames: 2,
} as const;

/** enum bpf_tc_attach_point. */
export const TcAttachPoint = {
  Ingress: 1,
  Egress: 2,
  Both: 3,
} as const;

export const TcFlags = {
  Replace: 1,
} as const;

export const StatsType = {
  RunTime: 0,
} as const;

/** bpf_obj_get file flags. */
export const FileFlags = {
  ReadOnly: 8,
  WriteOnly: 16,
} as const;
