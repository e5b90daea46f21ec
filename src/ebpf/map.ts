/**
 * A BPF map, owned through its fd. Keys and values are Buffers of exactly the
 * map's sizes: a wrong size is a BufferSizeError (a TypeError) before any
 * syscall. A per-CPU map's value is one slot per possible CPU, each slot
 * valueSize rounded up to 8 bytes.
 */
import { readFileSync } from 'node:fs';
import './dispose';
import { FileFlags, PER_CPU_MAP_TYPES, UpdateFlags } from './constants';
import { BpfError, BufferSizeError, NotSupportedError } from './errors';
import { expectKind, OwnedFd } from './fd';
import { native, type RawMapInfo } from './native';
import { numPossibleCpus } from './system';

export type MapInfo = RawMapInfo;

export interface MapSpecLike {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface BatchOptions {
  /** Entries per syscall (default 256); grown when a hash bucket does not fit. */
  batchSize?: number;
  /** Delete what was read (BPF_MAP_LOOKUP_AND_DELETE_BATCH). */
  delete?: boolean;
  /**
   * batches() only: fill the same two buffers from chunk to chunk instead of new ones (each chunk
   * is then valid until the next is asked for). A walk over millions of entries then allocates
   * nothing per chunk, and the garbage collector has no external memory to chase.
   */
  reuse?: boolean;
}

export type Entry = [key: Buffer, value: Buffer];

/** One chunk of a batch lookup as the kernel packs it. */
export interface PackedBatch {
  count: number;
  /** count keys of keySize bytes */
  keys: Buffer;
  /** count values of valueBufferSize bytes */
  values: Buffer;
}

const roundUp8 = (n: number): number => (n + 7) & ~7;

export class BpfMap {
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  readonly #fd: OwnedFd;

  /** Takes ownership of fd. */
  constructor(fd: number, spec: MapSpecLike) {
    this.#fd = new OwnedFd(fd, `map '${spec.name}'`);
    this.name = spec.name;
    this.type = spec.type;
    this.keySize = spec.keySize;
    this.valueSize = spec.valueSize;
    this.maxEntries = spec.maxEntries;
    this.flags = spec.flags;
  }

  /** Wrap (and own) an fd, reading the map's shape from the kernel. */
  static fromFd(fd: number): BpfMap {
    expectKind(fd, 'map', `fd ${fd}`);
    let info: RawMapInfo;
    try {
      info = native().mapGetInfo(fd);
    } catch (e) {
      native().closeFd(fd);
      throw e;
    }
    return new BpfMap(fd, info);
  }

  /** Open a map pinned in bpffs (readOnly: BPF_F_RDONLY). */
  static fromPin(path: string, opts: { readOnly?: boolean } = {}): BpfMap {
    return BpfMap.fromFd(expectKind(native().objGet(path, opts.readOnly ? FileFlags.ReadOnly : 0), 'map', path));
  }

  static fromId(id: number): BpfMap {
    return BpfMap.fromFd(native().mapGetFdById(id));
  }

  /** A new map of its own, outside any object (BPF_MAP_CREATE): for tools and tests. */
  static create(spec: { type: number; name: string; keySize: number; valueSize: number; maxEntries: number; flags?: number }): BpfMap {
    return BpfMap.fromFd(native().mapCreate(spec.type, spec.name, spec.keySize, spec.valueSize, spec.maxEntries, { flags: spec.flags ?? 0 }));
  }

  get fd(): number {
    return this.#fd.value;
  }

  get closed(): boolean {
    return this.#fd.closed;
  }

  get isPerCpu(): boolean {
    return PER_CPU_MAP_TYPES.has(this.type);
  }

  /** Bytes of one value as the kernel copies it: per-CPU maps hold round_up(valueSize, 8) × possible CPUs. */
  get valueBufferSize(): number {
    return this.isPerCpu ? roundUp8(this.valueSize) * numPossibleCpus() : this.valueSize;
  }

  info(): MapInfo {
    return native().mapGetInfo(this.fd);
  }

  /**
   * Kernel memory charged to the map, in bytes, from the kernel's own accounting (the `memlock`
   * line of /proc/self/fdinfo; exact per map type since Linux 6.4), or undefined if not reported.
   */
  memoryUsage(): number | undefined {
    const m = /^memlock:\s*(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${this.fd}`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  }

  /** The value under key, or undefined. For a per-CPU map: all CPUs' slots in one Buffer (see lookupPerCpu). */
  lookup(key: Uint8Array): Buffer | undefined {
    this.#checkKey(key);
    return native().mapLookupElem(this.fd, this.#k(key), this.valueBufferSize) ?? undefined;
  }

  /** One Buffer of valueSize bytes per possible CPU; an empty array when key is absent. */
  lookupPerCpu(key: Uint8Array): Buffer[] {
    if (!this.isPerCpu) throw new TypeError(`map '${this.name}' is not a per-CPU map`);
    const raw = this.lookup(key);
    return raw ? this.splitPerCpu(raw) : [];
  }

  /** Split a per-CPU value buffer into one valueSize slice per CPU. */
  splitPerCpu(raw: Buffer): Buffer[] {
    const stride = roundUp8(this.valueSize);
    const out: Buffer[] = [];
    for (let off = 0; off + stride <= raw.length; off += stride) out.push(raw.subarray(off, off + this.valueSize));
    return out;
  }

  /**
   * Set key to value (flags: UpdateFlags). For a per-CPU map, value is either
   * the whole valueBufferSize buffer or one valueSize Buffer per possible CPU.
   */
  update(key: Uint8Array, value: Uint8Array | readonly Uint8Array[], flags: number = UpdateFlags.Any): void {
    this.#checkKey(key);
    native().mapUpdateElem(this.fd, this.#k(key), this.#value(value), flags);
  }

  /** Delete key; false when it was not there. */
  delete(key: Uint8Array): boolean {
    this.#checkKey(key);
    return native().mapDeleteElem(this.fd, this.#k(key) ?? Buffer.alloc(0));
  }

  /** Read and delete key in one step (hash maps; queue/stack maps with a 0-byte key). */
  lookupAndDelete(key: Uint8Array): Buffer | undefined {
    this.#checkKey(key);
    return native().mapLookupAndDeleteElem(this.fd, this.#k(key), this.valueBufferSize) ?? undefined;
  }

  /** Keys in the kernel's order (BPF_MAP_GET_NEXT_KEY). Changes during the walk may repeat or skip keys. */
  *keys(): Generator<Buffer> {
    let key: Buffer | null = null;
    for (;;) {
      key = native().mapGetNextKey(this.fd, key, this.keySize);
      if (!key) return;
      yield key;
    }
  }

  /** [key, value] pairs, one lookup per key; keys deleted during the walk are skipped. */
  *entries(): Generator<Entry> {
    for (const key of this.keys()) {
      const value = native().mapLookupElem(this.fd, key, this.valueBufferSize);
      if (value) yield [key, value];
    }
  }

  [Symbol.iterator](): Generator<Entry> {
    return this.entries();
  }

  /**
   * All entries in chunks of up to batchSize, with BPF_MAP_LOOKUP_BATCH (one
   * syscall per chunk). Map types or kernels without batch operations fall
   * back to key-by-key iteration, still in chunks.
   */
  *lookupBatch(opts: BatchOptions = {}): Generator<Entry[]> {
    const vlen = this.valueBufferSize;
    for (const b of this.batches({ ...opts, reuse: false })) {
      const chunk: Entry[] = [];
      for (let i = 0; i < b.count; i++) {
        chunk.push([b.keys.subarray(i * this.keySize, (i + 1) * this.keySize), b.values.subarray(i * vlen, (i + 1) * vlen)]);
      }
      yield chunk;
    }
  }

  /**
   * lookupBatch without the slicing: each chunk as the kernel packs it, count keys of keySize
   * bytes and count values of valueBufferSize bytes (for walks over millions of entries that
   * read fields in place).
   */
  *batches(opts: BatchOptions = {}): Generator<PackedBatch> {
    let size = opts.batchSize ?? 256;
    if (!Number.isInteger(size) || size <= 0) throw new TypeError(`batchSize must be a positive integer, got ${size}`);
    const del = opts.delete ?? false;
    const vlen = this.valueBufferSize;
    let token: Buffer | null = null;
    let first = true;
    let bufs: { keys: Buffer; values: Buffer } | undefined;
    for (;;) {
      let r;
      if (opts.reuse && (!bufs || bufs.keys.length < size * this.keySize)) {
        bufs = { keys: Buffer.allocUnsafe(size * this.keySize), values: Buffer.allocUnsafe(size * vlen) };
      }
      try {
        r = native().mapLookupBatch(this.fd, token, this.keySize, vlen, size, { delete: del, ...bufs });
      } catch (e) {
        // A hash bucket with more entries than fit in one batch: grow and retry the same position.
        if (e instanceof BpfError && e.errnoName === 'ENOSPC' && size < 1 << 20) {
          size *= 2;
          continue;
        }
        if (first && (e instanceof NotSupportedError || (e instanceof BpfError && e.errnoName === 'EINVAL'))) {
          for (const chunk of this.#batchFallback(size, del)) {
            yield { count: chunk.length, keys: Buffer.concat(chunk.map(([k]) => k)), values: Buffer.concat(chunk.map(([, v]) => v)) };
          }
          return;
        }
        throw e;
      }
      first = false;
      if (r.count > 0) yield { count: r.count, keys: r.keys.subarray(0, r.count * this.keySize), values: r.values.subarray(0, r.count * vlen) };
      if (r.done) return;
      token = r.nextBatch;
    }
  }

  *#batchFallback(size: number, del: boolean): Generator<Entry[]> {
    let chunk: Entry[] = [];
    if (del) {
      // Drain from the head: after a delete, "next of nothing" is the new first key.
      for (;;) {
        const key = native().mapGetNextKey(this.fd, null, this.keySize);
        if (!key) break;
        const value = native().mapLookupElem(this.fd, key, this.valueBufferSize);
        native().mapDeleteElem(this.fd, key);
        if (value) chunk.push([key, value]);
        if (chunk.length === size) {
          yield chunk;
          chunk = [];
        }
      }
    } else {
      for (const entry of this.entries()) {
        chunk.push(entry);
        if (chunk.length === size) {
          yield chunk;
          chunk = [];
        }
      }
    }
    if (chunk.length > 0) yield chunk;
  }

  /** Delete keys in one syscall (BPF_MAP_DELETE_BATCH); returns how many were deleted. */
  deleteBatch(keys: readonly Uint8Array[]): number {
    if (keys.length === 0) return 0;
    keys.forEach((k) => this.#checkKey(k));
    return native().mapDeleteBatch(this.fd, Buffer.concat(keys), keys.length);
  }

  /**
   * Write keys[i] -> values[i] in one syscall (BPF_MAP_UPDATE_BATCH); returns how many were
   * written. For a per-CPU map each value is the whole valueBufferSize buffer.
   */
  updateBatch(keys: readonly Uint8Array[], values: readonly Uint8Array[], flags: number = UpdateFlags.Any): number {
    if (keys.length !== values.length) throw new TypeError(`map '${this.name}': ${keys.length} keys but ${values.length} values`);
    if (keys.length === 0) return 0;
    keys.forEach((k) => this.#checkKey(k));
    const vs = values.map((v) => this.#value(v));
    return native().mapUpdateBatch(this.fd, Buffer.concat(keys), Buffer.concat(vs), keys.length, { elemFlags: flags });
  }

  /** updateBatch of entries already packed as batches() gives them (count keys, count values). */
  updatePacked(batch: PackedBatch, flags: number = UpdateFlags.Any): number {
    if (batch.count === 0) return 0;
    if (batch.keys.length !== batch.count * this.keySize) throw new BufferSizeError(`map '${this.name}': ${batch.count} packed keys`, batch.count * this.keySize, batch.keys.length);
    if (batch.values.length !== batch.count * this.valueBufferSize) throw new BufferSizeError(`map '${this.name}': ${batch.count} packed values`, batch.count * this.valueBufferSize, batch.values.length);
    return native().mapUpdateBatch(this.fd, batch.keys, batch.values, batch.count, { elemFlags: flags });
  }

  /** Pin to a path in bpffs; the map then outlives this process. */
  pin(path: string): void {
    native().objPin(this.fd, path);
  }

  /** A second, independently owned handle of the same map. */
  clone(): BpfMap {
    return new BpfMap(this.#fd.dup(), this);
  }

  close(): void {
    this.#fd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #checkKey(key: Uint8Array): void {
    if (!(key instanceof Uint8Array)) throw new TypeError(`map '${this.name}': key must be a Buffer`);
    if (key.length !== this.keySize) throw new BufferSizeError(`map '${this.name}': key`, this.keySize, key.length);
  }

  /** Maps without keys (queue, stack) take a NULL key. */
  #k(key: Uint8Array): Uint8Array | null {
    return this.keySize === 0 ? null : key;
  }

  #value(value: Uint8Array | readonly Uint8Array[]): Uint8Array {
    const size = this.valueBufferSize;
    if (value instanceof Uint8Array) {
      if (value.length !== size) {
        const what = this.isPerCpu ? 'value (all CPUs: round_up(valueSize, 8) × possible CPUs)' : 'value';
        throw new BufferSizeError(`map '${this.name}': ${what}`, size, value.length);
      }
      return value;
    }
    if (!Array.isArray(value)) throw new TypeError(`map '${this.name}': value must be a Buffer`);
    if (!this.isPerCpu) throw new TypeError(`map '${this.name}' is not per-CPU: value must be one Buffer`);
    const cpus = numPossibleCpus();
    if (value.length !== cpus) throw new TypeError(`map '${this.name}': need one value per possible CPU (${cpus}), got ${value.length}`);
    const stride = roundUp8(this.valueSize);
    const out = Buffer.alloc(size);
    value.forEach((v: Uint8Array, cpu: number) => {
      if (v.length !== this.valueSize) throw new BufferSizeError(`map '${this.name}': value for CPU ${cpu}`, this.valueSize, v.length);
      out.set(v, cpu * stride);
    });
    return out;
  }
}
