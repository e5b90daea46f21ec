/** A loaded BPF program, owned through its fd. */
import './dispose';
import { expectKind, OwnedFd } from './fd';
import { native, type RawProgInfo } from './native';

export type ProgramInfo = RawProgInfo;

export interface RunOptions {
  /** Times the kernel runs the program on the same input (default 1); duration is the average. */
  repeat?: number;
  /** Context in, e.g. a struct xdp_md (ingress_ifindex, rx_queue_index …). */
  ctx?: Uint8Array;
  /** TestRunFlags (e.g. XdpLiveFrames). */
  flags?: number;
  /** Frames per batch for XdpLiveFrames runs. */
  batchSize?: number;
  /** Room for the output packet; default max(input + 256, 4096). */
  dataSizeOut?: number;
}

export interface RunResult {
  /** The program's return value (for XDP: XDP_ABORTED 0, DROP 1, PASS 2, TX 3, REDIRECT 4). */
  retval: number;
  /** Average run time per repetition, ns (as measured by the kernel). */
  durationNs: number;
  /** The packet after the program (empty for live-frame runs). */
  data: Buffer;
  /** The context after the program, when a context was given. */
  ctx?: Buffer;
}

export class Program {
  readonly name: string;
  readonly type: number;
  readonly #fd: OwnedFd;

  /** Takes ownership of fd. */
  constructor(fd: number, name: string, type: number) {
    this.#fd = new OwnedFd(fd, `program '${name}'`);
    this.name = name;
    this.type = type;
  }

  /** Wrap (and own) an fd, reading name and type from the kernel. */
  static fromFd(fd: number): Program {
    expectKind(fd, 'prog', `fd ${fd}`);
    let info: RawProgInfo;
    try {
      info = native().progGetInfo(fd);
    } catch (e) {
      native().closeFd(fd);
      throw e;
    }
    return new Program(fd, info.name, info.type);
  }

  /** Open a program pinned in bpffs. */
  static fromPin(path: string): Program {
    const fd = native().objGet(path);
    return Program.fromFd(expectKind(fd, 'prog', path));
  }

  /** Open a loaded program by its id. */
  static fromId(id: number): Program {
    return Program.fromFd(native().progGetFdById(id));
  }

  get fd(): number {
    return this.#fd.value;
  }

  get closed(): boolean {
    return this.#fd.closed;
  }

  info(): ProgramInfo {
    return native().progGetInfo(this.fd);
  }

  /** Run the program once (or `repeat` times) on data through BPF_PROG_TEST_RUN, off the JS thread. */
  run(data: Uint8Array, opts: RunOptions = {}): Promise<RunResult> {
    return this.#run(data, opts, -1);
  }

  /**
   * Like run(), on a thread pinned to `cpu`: concurrent calls on different
   * CPUs exercise the program's maps from those CPUs at the same time.
   */
  runOnCpu(cpu: number, data: Uint8Array, opts: RunOptions = {}): Promise<RunResult> {
    if (!Number.isInteger(cpu) || cpu < 0) throw new TypeError(`cpu must be a non-negative integer, got ${cpu}`);
    return this.#run(data, opts, cpu);
  }

  /**
   * Run the program once on each frame, one BPF_PROG_TEST_RUN per frame, all in one job off the JS
   * thread (the hop to a worker thread costs more than a run). Resolves to each frame's return
   * value, or -errno where its run failed (-EINVAL: shorter than Ethernet). No output packets.
   */
  async runBatch(frames: readonly Uint8Array[]): Promise<Int32Array> {
    const lens = new Uint32Array(frames.length);
    frames.forEach((f, i) => { lens[i] = f.length; });
    const out = await this.#fd.withDup((fd) => native().progTestRunBatch(fd, Buffer.concat(frames), lens));
    // A fresh buffer is aligned; copy one that is not (Int32Array needs a multiple of 4).
    const aligned = out.byteOffset % 4 === 0 ? out : Buffer.from(out);
    return new Int32Array(aligned.buffer, aligned.byteOffset, frames.length);
  }

  async #run(data: Uint8Array, opts: RunOptions, cpu: number): Promise<RunResult> {
    const raw = {
      ...(opts.repeat !== undefined ? { repeat: opts.repeat } : {}),
      ...(opts.ctx !== undefined ? { ctx: opts.ctx } : {}),
      ...(opts.flags !== undefined ? { flags: opts.flags } : {}),
      ...(opts.batchSize !== undefined ? { batchSize: opts.batchSize } : {}),
      ...(opts.dataSizeOut !== undefined ? { dataSizeOut: opts.dataSizeOut } : {}),
    };
    const r = await this.#fd.withDup((fd) =>
      cpu < 0 ? native().progTestRun(fd, data, raw) : native().progTestRunOnCpu(fd, data, raw, cpu),
    );
    return {
      retval: r.retval,
      durationNs: r.duration,
      data: r.dataOut ?? Buffer.alloc(0),
      ...(r.ctxOut ? { ctx: r.ctxOut } : {}),
    };
  }

  /** Pin to a path in bpffs; the program then outlives this process. */
  pin(path: string): void {
    native().objPin(this.fd, path);
  }

  /** A second, independently owned handle of the same program. */
  clone(): Program {
    return new Program(this.#fd.dup(), this.name, this.type);
  }

  close(): void {
    this.#fd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
