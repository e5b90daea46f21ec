/**
 * Errors of the eBPF binding. Each class has a stable `code` (listed in
 * docs/errors.md); a failing kernel or libbpf call also carries `errno`, its
 * name (`errnoName`, e.g. 'EPERM') and the function that failed (`op`).
 */
import { readFileSync } from 'node:fs';

export const ErrorCode = {
  Bpf: 'SLUICE_E_BPF',
  Verifier: 'SLUICE_E_VERIFIER',
  NotSupported: 'SLUICE_E_NOT_SUPPORTED',
  Permission: 'SLUICE_E_PERMISSION',
  BufferSize: 'SLUICE_E_BUFFER_SIZE',
  Closed: 'SLUICE_E_CLOSED',
  NativeMissing: 'SLUICE_E_NATIVE_MISSING',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The shape of an error thrown by the native addon. */
export interface NativeErrorLike extends Error {
  code: string;
  errno: number;
  syscall: string;
  libbpfLog?: string;
  log?: string;
  program?: string;
  logTruncated?: boolean;
}

export function isNativeError(e: unknown): e is NativeErrorLike {
  return e instanceof Error && typeof (e as Partial<NativeErrorLike>).errno === 'number' &&
    typeof (e as Partial<NativeErrorLike>).syscall === 'string';
}

export interface BpfErrorInit {
  errno: number;
  errnoName: string;
  op: string;
  libbpfLog?: string;
  cause?: unknown;
}

/** A libbpf or bpf(2) call failed. */
export class BpfError extends Error {
  readonly code: ErrorCode = ErrorCode.Bpf;
  readonly errno: number;
  /** errno as a name: 'EPERM', 'ENOENT', 'EOPNOTSUPP', 'ENOTSUPP' (524, kernel-internal) … */
  readonly errnoName: string;
  /** The libbpf or libc function that failed. */
  readonly op: string;
  /** What libbpf printed during the call, if anything. */
  readonly libbpfLog: string | undefined;

  constructor(message: string, init: BpfErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.errno = init.errno;
    this.errnoName = init.errnoName;
    this.op = init.op;
    this.libbpfLog = init.libbpfLog;
  }
}

/** The kernel lacks a feature (e.g. native XDP on this driver, batch ops on this map type). */
export class NotSupportedError extends BpfError {
  override readonly code: ErrorCode = ErrorCode.NotSupported;
}

/** Missing root / CAP_BPF / CAP_NET_ADMIN. */
export class PermissionError extends BpfError {
  override readonly code: ErrorCode = ErrorCode.Permission;
}

/**
 * The verifier rejected a program. `message` is a one-line summary (the last
 * meaningful line of the log and how many lines were left out); `log` holds
 * the whole verifier log.
 */
export class VerifierError extends BpfError {
  override readonly code: ErrorCode = ErrorCode.Verifier;
  /** The full verifier log of the failing program. */
  readonly log: string;
  /** The program that failed to load, when known. */
  readonly program: string | undefined;
  /** The log hit the maximum buffer size and shows only its tail. */
  readonly truncated: boolean;
  readonly summary: string;
  readonly hints: string[];

  constructor(init: BpfErrorInit & { log: string; program?: string; truncated?: boolean }) {
    const { summary, omitted } = summarizeVerifierLog(init.log);
    const hints = verifierHints(init.errnoName, init.truncated ?? false);
    const what = init.program ? `load program '${init.program}'` : 'load object';
    const tail = omitted > 0 ? ` (${omitted} line${omitted === 1 ? '' : 's'} omitted, see .log)` : '';
    super(`${what}: ${init.errnoName}: ${summary}${tail}${hints.length ? `. ${hints.join(' ')}` : ''}`, init);
    this.log = init.log;
    this.program = init.program;
    this.truncated = init.truncated ?? false;
    this.summary = summary;
    this.hints = hints;
  }
}

/** A key or value Buffer of the wrong size, caught before any syscall. */
export class BufferSizeError extends TypeError {
  readonly code = ErrorCode.BufferSize;
  constructor(what: string, expected: number, actual: number) {
    super(`${what} must be ${expected} bytes, got ${actual}`);
    this.name = 'BufferSizeError';
  }
}

/** Use of a Program, BpfMap, Link or ObjectSpec after close(). */
export class ClosedError extends Error {
  readonly code = ErrorCode.Closed;
  constructor(what: string) {
    super(`${what} is closed`);
    this.name = 'ClosedError';
  }
}

/** build/Release/sluice_native.node is missing or cannot be loaded. */
export class NativeMissingError extends Error {
  readonly code = ErrorCode.NativeMissing;
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'NativeMissingError';
  }
}

// ---------------------------------------------------------------- verifier log

/** Lines the verifier prints after the verdict; they say nothing about the cause. */
const TRAILER = [
  /^processed \d+ insns/,
  /^verification time/,
  /^stack depth/,
  /^-- END PROG LOAD LOG --/,
];

/**
 * The last meaningful line of a verifier log, and how many other meaningful
 * lines there are.
 */
export function summarizeVerifierLog(log: string): { summary: string; omitted: number } {
  const lines = log.split('\n').map((l) => l.trimEnd()).filter((l) => l.length > 0);
  while (lines.length > 0 && TRAILER.some((re) => re.test(lines[lines.length - 1]!))) lines.pop();
  if (lines.length === 0) return { summary: 'no verifier log (see .libbpfLog)', omitted: 0 };
  return { summary: lines[lines.length - 1]!, omitted: lines.length - 1 };
}

function verifierHints(errnoName: string, truncated: boolean): string[] {
  const hints: string[] = [];
  if (errnoName === 'EPERM') hints.push(permissionHint());
  if (truncated) hints.push('The log was truncated: load with a larger logSizeMax to see all of it.');
  return hints;
}

// ---------------------------------------------------------------- privileges

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const CAP_PERFMON = 38n;
const CAP_BPF = 39n;

export interface Capabilities {
  bpf: boolean;
  perfmon: boolean;
  netAdmin: boolean;
  sysAdmin: boolean;
}

/** The effective capabilities of this process that matter for BPF, from /proc/self/status. */
export function capabilities(): Capabilities {
  let eff = 0n;
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) eff = BigInt(`0x${m[1]}`);
  } catch {
    /* not Linux or no procfs: report nothing */
  }
  const has = (bit: bigint): boolean => ((eff >> bit) & 1n) === 1n;
  return { bpf: has(CAP_BPF), perfmon: has(CAP_PERFMON), netAdmin: has(CAP_NET_ADMIN), sysAdmin: has(CAP_SYS_ADMIN) };
}

/** Enough to load programs and attach them to interfaces. */
export function hasBpfPrivileges(c: Capabilities = capabilities()): boolean {
  return (c.sysAdmin || (c.bpf && c.perfmon)) && c.netAdmin;
}

function permissionHint(): string {
  const c = capabilities();
  if (!hasBpfPrivileges(c)) {
    return 'Run as root (this needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN, plus CAP_NET_ADMIN to attach).';
  }
  return 'The process has the capabilities; on kernels before 5.11 raise the locked-memory limit (ulimit -l unlimited).';
}

// ---------------------------------------------------------------- conversion

const NOT_SUPPORTED = new Set(['EOPNOTSUPP', 'ENOTSUPP']);

/** Turn an error thrown by the native addon into the binding's error classes. */
export function fromNative(e: unknown): unknown {
  if (!isNativeError(e)) return e;
  const init: BpfErrorInit = {
    errno: e.errno,
    errnoName: e.code,
    op: e.syscall,
    cause: e,
    ...(e.libbpfLog ? { libbpfLog: e.libbpfLog } : {}),
  };
  if (e.syscall === 'bpf_object__load' && e.log) {
    return new VerifierError({
      ...init,
      log: e.log,
      ...(e.program ? { program: e.program } : {}),
      truncated: e.logTruncated === true,
    });
  }
  const detail = e.libbpfLog ? lastLine(e.libbpfLog) : undefined;
  const message = detail && !e.message.includes(detail) ? `${e.message} (libbpf: ${detail})` : e.message;
  if ((e.code === 'EPERM' || e.code === 'EACCES') && !hasBpfPrivileges()) {
    return new PermissionError(`${message}. ${permissionHint()}`, init);
  }
  if (NOT_SUPPORTED.has(e.code)) return new NotSupportedError(`${message}: not supported by this kernel or device`, init);
  return new BpfError(message, init);
}

function lastLine(s: string): string | undefined {
  const lines = s.split('\n').map((l) => l.replace(/^libbpf:\s*/, '').trim()).filter(Boolean);
  return lines[lines.length - 1];
}
