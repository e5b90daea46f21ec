/**
 * An owned file descriptor: closed once by close(), or by the garbage
 * collector if its owner is dropped without close() (as cilium/ebpf's
 * finalizers do), so that a forgotten Program or BpfMap does not leak.
 */
import './dispose';
import { readlinkSync } from 'node:fs';
import { ClosedError } from './errors';
import { native } from './native';

const leaked = new FinalizationRegistry<number>((fd) => {
  try {
    native().closeFd(fd);
  } catch {
    /* nothing to report to from a finalizer */
  }
});

export class OwnedFd {
  #fd: number;
  readonly #what: string;

  /** Takes ownership of fd. `what` names the owner in errors ("program 'xdp_tiny'"). */
  constructor(fd: number, what: string) {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`${what}: invalid fd ${fd}`);
    this.#fd = fd;
    this.#what = what;
    leaked.register(this, fd, this);
  }

  get value(): number {
    if (this.#fd < 0) throw new ClosedError(this.#what);
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** A new fd for the same kernel object, owned by the caller. */
  dup(): number {
    return native().dupFd(this.value);
  }

  /**
   * Run fn with a private duplicate of the fd, closed afterwards: an async
   * operation then cannot race with close() (or with the fd number's reuse).
   */
  async withDup<T>(fn: (fd: number) => Promise<T>): Promise<T> {
    const fd = this.dup();
    try {
      return await fn(fd);
    } finally {
      native().closeFd(fd);
    }
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    leaked.unregister(this);
    native().closeFd(fd);
  }
}

export type BpfFdKind = 'prog' | 'map' | 'link' | 'other';

/** What kind of BPF object an fd refers to, from its anon inode name. */
export function fdKind(fd: number): BpfFdKind {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return 'other';
  }
  if (target === 'anon_inode:bpf-prog') return 'prog';
  if (target === 'anon_inode:bpf-map') return 'map';
  // A new link's fd says bpf_link, the same link opened from its pin says bpf-link.
  if (target === 'anon_inode:bpf_link' || target === 'anon_inode:bpf-link') return 'link';
  return 'other';
}

/**
 * Take fd as an object of the expected kind: anything else (a map pinned where
 * a program was expected) is closed and rejected, as bpf_obj_get_info_by_fd
 * would otherwise fill the wrong structure without complaint.
 */
export function expectKind(fd: number, kind: BpfFdKind, source: string): number {
  const actual = fdKind(fd);
  if (actual !== kind) {
    native().closeFd(fd);
    throw new TypeError(`${source} is a BPF ${actual === 'other' ? 'object of another kind' : actual}, not a ${kind}`);
  }
  return fd;
}
