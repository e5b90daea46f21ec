/**
 * The typed eBPF binding: ObjectSpec → Collection of Program and BpfMap →
 * Link. Mechanism only; what to load and attach is decided above this layer.
 */
export * from './constants';
export {
  BpfError,
  BufferSizeError,
  ClosedError,
  ErrorCode,
  NativeMissingError,
  NotSupportedError,
  PermissionError,
  VerifierError,
  summarizeVerifierLog,
} from './errors';
export { BpfMap, type BatchOptions, type Entry, type MapInfo, type MapSpecLike, type PackedBatch } from './map';
export {
  Collection,
  ObjectSpec,
  type ConstantValue,
  type DatasecVar,
  type LoadOptions,
  type MapSpec,
  type ProgramSpec,
} from './object';
export { Program, type ProgramInfo, type RunOptions, type RunResult } from './program';
export {
  Link,
  tcAttach,
  tcDetach,
  tcHookCreate,
  tcHookDestroy,
  tcQuery,
  xdpAttach,
  xdpDetach,
  xdpQuery,
  type LinkInfo,
  type NetnsOption,
  type TcAttachOptions,
  type TcDirection,
  type TcFilter,
  type TcFilterId,
  type XdpAttachMode,
  type XdpAttachOptions,
  type XdpDetachOptions,
  type XdpMode,
  type XdpNetlinkAttachOptions,
  type XdpStatus,
} from './link';
export { ifindex, ifname, netnsPath, withNetns, NETNS_RUN_DIR } from './netns';
export {
  capabilities,
  enableStats,
  flock,
  unixDatagramSend,
  hasBpfPrivileges,
  LOCK,
  libbpfVersion,
  numPossibleCpus,
  StatsHandle,
  type Capabilities,
} from './system';
export { RingBuffer } from './ringbuf';
export {
  pacedSend,
  setGro,
  xdpLiveRun,
  type LiveRunOptions,
  type LiveRunResult,
  type PacedSendOptions,
  type PacedSendResult,
  type SourceRewrite,
} from './lab';
export {
  addonPath,
  BENCH_OBJECT,
  BPF_DIR,
  COUNT_OBJECT,
  FLOOD_OBJECT,
  lockRoot,
  PACKAGE_JSON,
  pinRoot,
  PROD_OBJECT,
  REPO,
  SLUICE_BIN,
  STACK_OBJECT,
  stateRoot,
  TEST_OBJECT,
} from './paths';
