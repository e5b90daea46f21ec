/**
 * An owned file descriptor: closed once by close(), or by the garbage
 * collector if its owner is dropped without close() (as cilium/ebpf's
 * finalizers do), so that a forgotten Program or BpfMap does not leak.
 */
import './dispose';
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
