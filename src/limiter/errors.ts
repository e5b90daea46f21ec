/**
 * The one error registry (docs/errors.md; test/docs/reference.test.ts keeps the two equal): every
 * SLUICE_E_* code the project gives, the class that carries it, the HTTP status the API answers it
 * with and the exit code of the `sluice` command. It lives in the limiter because every layer that
 * throws or maps errors may import the limiter (DESIGN.md's import edges); the eBPF binding may import
 * only the addon, so its codes stay defined in src/ebpf/errors.ts and are listed here.
 */
import { ErrorCode } from '../ebpf/errors';

/** Exit codes of the `sluice` command, documented in docs/cli.md. */
export const EXIT = { ok: 0, error: 1, usage: 2, notProtected: 3, permission: 4 } as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Codes of the control plane (src/agent, the `sluice` command). */
export const AgentCode = {
  NoIface: 'SLUICE_E_NO_IFACE',
  NoNetns: 'SLUICE_E_NO_NETNS',
  XdpBusy: 'SLUICE_E_XDP_BUSY',
  NativeUnsupported: 'SLUICE_E_NATIVE_UNSUPPORTED',
  Bpffs: 'SLUICE_E_BPFFS',
  StateIncompatible: 'SLUICE_E_STATE_INCOMPATIBLE',
  PinsAbiMismatch: 'SLUICE_E_PINS_ABI_MISMATCH',
  NotProtected: 'SLUICE_E_NOT_PROTECTED',
  InvalidArgument: 'SLUICE_E_INVALID_ARGUMENT',
  ModeChange: 'SLUICE_E_MODE_CHANGE',
  Busy: 'SLUICE_E_LOCKED',
  Pending: 'SLUICE_E_PENDING',
  RollbackFailed: 'SLUICE_E_ROLLBACK_FAILED',
  DaemonRunning: 'SLUICE_E_DAEMON_RUNNING',
  ManagedElsewhere: 'SLUICE_E_MANAGED_ELSEWHERE',
  NotInList: 'SLUICE_E_NOT_IN_LIST',
  MgmtShrink: 'SLUICE_E_MGMT_SHRINK',
  ManagedByDaemon: 'SLUICE_E_MANAGED',
  DaemonUnreachable: 'SLUICE_E_DAEMON_UNREACHABLE',
} as const;
export type AgentCodeValue = (typeof AgentCode)[keyof typeof AgentCode];

/** Codes of the daemon's HTTP API (src/api). */
export const ApiCode = {
  BadRequest: 'SLUICE_E_API_BAD_REQUEST',
  Unauthorized: 'SLUICE_E_API_UNAUTHORIZED',
  NotFound: 'SLUICE_E_API_NOT_FOUND',
  NotManaged: 'SLUICE_E_NOT_MANAGED',
  SocketBusy: 'SLUICE_E_API_SOCKET_BUSY',
  SocketUnsafe: 'SLUICE_E_API_SOCKET_UNSAFE',
  HostNotAllowed: 'SLUICE_E_API_HOST',
  CrossSite: 'SLUICE_E_API_CROSS_SITE',
  ReloadFailed: 'SLUICE_E_RELOAD_FAILED',
  Internal: 'SLUICE_E_INTERNAL',
} as const;
export type ApiCodeValue = (typeof ApiCode)[keyof typeof ApiCode];

/** Codes of the domain (src/limiter) and of the config file (src/config). */
export const LimiterCode = {
  Policy: 'SLUICE_E_POLICY',
  ListsTooLarge: 'SLUICE_E_LISTS_TOO_LARGE',
} as const;
export const CONFIG_ERROR = 'SLUICE_E_CONFIG';

export interface ErrorEntry {
  /** The class that carries the code ('' when none does: a plain Error with a `code`, or an answer only). */
  readonly class: string;
  /** The HTTP status the API answers with, unless the error states its own (an ApiError does). */
  readonly http: number;
  /** The exit code of the `sluice` command. */
  readonly exit: ExitCode;
}

const entry = (cls: string, http = 500, exit: ExitCode = EXIT.error): ErrorEntry => ({ class: cls, http, exit });

/** Every code, and only those: docs/errors.md lists exactly these. */
export const ERRORS: Readonly<Record<string, ErrorEntry>> = Object.freeze({
  // The eBPF binding (src/ebpf/errors.ts).
  [ErrorCode.Bpf]: entry('BpfError'),
  [ErrorCode.Verifier]: entry('VerifierError'),
  [ErrorCode.NotSupported]: entry('NotSupportedError'),
  [ErrorCode.Permission]: entry('PermissionError', 500, EXIT.permission),
  [ErrorCode.BufferSize]: entry('BufferSizeError'),
  [ErrorCode.Closed]: entry('ClosedError'),
  [ErrorCode.NativeMissing]: entry('NativeMissingError'),
  // The control plane.
  [AgentCode.NoIface]: entry('AgentError', 503),
  [AgentCode.NoNetns]: entry('AgentError', 503),
  [AgentCode.XdpBusy]: entry('AgentError'),
  [AgentCode.NativeUnsupported]: entry('AgentError'),
  [AgentCode.Bpffs]: entry('AgentError'),
  [AgentCode.StateIncompatible]: entry('AgentError'),
  [AgentCode.PinsAbiMismatch]: entry('AgentError'),
  [AgentCode.NotProtected]: entry('AgentError', 503, EXIT.notProtected),
  [AgentCode.InvalidArgument]: entry('AgentError', 400, EXIT.usage),
  [AgentCode.ModeChange]: entry('AgentError'),
  [AgentCode.Busy]: entry('AgentError', 409),
  [AgentCode.Pending]: entry('AgentError', 409),
  [AgentCode.RollbackFailed]: entry('AgentError'),
  [AgentCode.DaemonRunning]: entry('AgentError'),
  [AgentCode.ManagedElsewhere]: entry('AgentError'),
  [AgentCode.NotInList]: entry('AgentError', 404),
  [AgentCode.MgmtShrink]: entry('AgentError'),
  [AgentCode.ManagedByDaemon]: entry('AgentError'),
  [AgentCode.DaemonUnreachable]: entry('AgentError'),
  // The domain and the config file. A PolicyError is answered on its own terms (400, "invalid limits";
  // exit code 2 whatever its code), a ConfigError too (422, its problems).
  [LimiterCode.Policy]: entry('PolicyError', 400, EXIT.usage),
  [LimiterCode.ListsTooLarge]: entry('ListsTooLargeError', 400, EXIT.usage),
  [CONFIG_ERROR]: entry('ConfigError', 422, EXIT.usage),
  // The HTTP API: an ApiError carries its status (this one is its usual one).
  [ApiCode.BadRequest]: entry('ApiError', 400),
  [ApiCode.Unauthorized]: entry('ApiError', 401),
  [ApiCode.NotFound]: entry('', 404),
  [ApiCode.NotManaged]: entry('ApiError', 404),
  [ApiCode.SocketBusy]: entry('ApiError'),
  [ApiCode.SocketUnsafe]: entry('ApiError'),
  [ApiCode.HostNotAllowed]: entry('ApiError', 403),
  [ApiCode.CrossSite]: entry('ApiError', 403),
  [ApiCode.ReloadFailed]: entry('ApiError'),
  [ApiCode.Internal]: entry(''),
});

/** The registry's entry of a code; undefined for a code that is not one of ours. */
export function errorEntry(code: unknown): ErrorEntry | undefined {
  return typeof code === 'string' && Object.hasOwn(ERRORS, code) ? ERRORS[code] : undefined;
}

/** One problem of an invalid config or policy file. */
export interface ConfigProblem {
  /** Where in the document: "interfaces[0].limits.rate"; "" for the document as a whole. */
  path: string;
  /** 1-based line in the file, when the YAML document tells. */
  line?: number;
  /** What is wrong and what is expected. */
  message: string;
}

export function formatProblem(file: string, p: ConfigProblem): string {
  return `${file}${p.line !== undefined ? `:${p.line}` : ''}: ${p.path ? `${p.path}: ` : ''}${p.message}`;
}

/**
 * The one error an invalid daemon config file gives: every problem at once, each with where it is
 * (file, path, YAML line) and what is expected. Stable code SLUICE_E_CONFIG (docs/errors.md).
 */
export class ConfigError extends Error {
  readonly code = CONFIG_ERROR;
  /**
   * The files read on the way, when known (path -> SHA-256 of the content; "" for one that could
   * not be read): a daemon that refused them waits for one of them to change before trying again.
   */
  inputs?: Record<string, string>;
  constructor(readonly file: string, readonly problems: ConfigProblem[]) {
    super(`invalid config ${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${problems.map((p) => `  - ${formatProblem(file, p)}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** An error of the control plane, with its stable code and a message that says what to do. */
export class AgentError extends Error {
  constructor(readonly code: AgentCodeValue, message: string) {
    super(message);
    this.name = 'AgentError';
  }
}

/** One problem of an API request or of a reload, as the API's error body lists it (docs/api.md). */
export interface Problem {
  path: string;
  line?: number;
  message: string;
}

/** An error the API answers with its own status (docs/api.md); thrown by the API and by its backend. */
export class ApiError extends Error {
  constructor(readonly code: ApiCodeValue, readonly status: number, message: string, readonly problems?: Problem[]) {
    super(message);
    this.name = 'ApiError';
  }
}
