/** Process-wide facts and switches: possible CPUs, run-time statistics, libbpf version. */
import './dispose';
import { StatsType } from './constants';
import { native } from './native';

export { capabilities, hasBpfPrivileges, type Capabilities } from './errors';

let cpus: number | undefined;

/** Possible CPUs (libbpf_num_possible_cpus): the number of slots in a per-CPU value. */
export function numPossibleCpus(): number {
  cpus ??= native().numPossibleCpus();
  return cpus;
}

export function libbpfVersion(): string {
  return native().libbpfVersion();
}

/** While open, the kernel accounts run time and count per program (ProgramInfo.runTimeNs/runCnt). */
export class StatsHandle {
  #fd: number;

  constructor(fd: number) {
    this.#fd = fd;
  }

  get fd(): number {
    return this.#fd;
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    native().closeFd(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Turn on BPF run-time statistics (BPF_ENABLE_STATS) until the handle is closed. */
export function enableStats(type: number = StatsType.RunTime): StatsHandle {
  return new StatsHandle(native().enableStats(type));
}

/** Operations of flock(2), as <sys/file.h> numbers them. */
export const LOCK = { SH: 1, EX: 2, NB: 4, UN: 8 } as const;

/**
 * flock(2) on a file descriptor (Node has none): an advisory lock of the open file, released by
 * the kernel when the last descriptor of it closes, so a process that dies (even by SIGKILL)
 * never leaves it held. Returns false when op has LOCK.NB and another open file holds it.
 */
export function flock(fd: number, op: number): boolean {
  return native().flock(fd, op);
}

/**
 * Send one datagram to a Unix socket (Node has no datagram Unix sockets): `address` is the socket's
 * path, or `\0name` for an abstract name. Returns the bytes sent; throws a BpfError with the errno
 * (ENOENT, ECONNREFUSED, EAGAIN …) otherwise.
 */
export function unixDatagramSend(address: string, message: string): number {
  return native().unixDatagramSend(Buffer.from(address, 'utf8'), Buffer.from(message, 'utf8'));
}
