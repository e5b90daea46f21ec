/**
 * ObjectSpec → Collection, in the manner of cilium/ebpf: open an object file
 * into a spec you can inspect and adjust (map sizes, constants, which
 * programs load), then load it into a Collection of owned Programs and Maps.
 */
import './dispose';
import { BpfMap } from './map';
import { BufferSizeError, ClosedError } from './errors';
import { native, type ObjectHandle, type RawDatasecVar } from './native';
import { Program } from './program';

export interface ProgramSpec {
  name: string;
  /** ELF section, e.g. "xdp" or "tc". */
  section: string;
  type: number;
  expectedAttachType: number;
  autoload: boolean;
  insnCount: number;
}

export interface MapSpec {
  /** As the kernel will know it; internal maps are named "<object>.rodata" and the like. */
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  /** .rodata, .data, .bss, .kconfig */
  internal: boolean;
}

export type DatasecVar = RawDatasecVar;

export interface LoadOptions {
  /** Verifier log level: 1 (default) logs the failing path, 2 every instruction; 0 only on failure. */
  logLevel?: number;
  /** First verifier log buffer per program, bytes (default 1 MiB); grown ×4 on ENOSPC. */
  logSize?: number;
  /** Largest verifier log buffer (default 64 MiB). */
  logSizeMax?: number;
}

/** A value for setConstants: numbers and bigints are written little-endian in the variable's size. */
export type ConstantValue = number | bigint | boolean | Uint8Array;

export class ObjectSpec {
  readonly path: string;
  #h: ObjectHandle | undefined;

  private constructor(path: string, h: ObjectHandle) {
    this.path = path;
    this.#h = h;
  }

  /** Open a BPF object file (bpf_object__open_file). */
  static open(path: string): ObjectSpec {
    return new ObjectSpec(path, native().objectOpenFile(path));
  }

  get #handle(): ObjectHandle {
    if (!this.#h) throw new ClosedError(`object spec '${this.path}'`);
    return this.#h;
  }

  get programs(): ProgramSpec[] {
    return native().objectPrograms(this.#handle);
  }

  get maps(): MapSpec[] {
    return native().objectMaps(this.#handle).map(({ initialValueSize: _, ...m }) => m);
  }

  program(name: string): ProgramSpec | undefined {
    return this.programs.find((p) => p.name === name);
  }

  /** A map by name; internal maps also by section (".rodata"). */
  map(name: string): MapSpec | undefined {
    const maps = this.maps;
    return maps.find((m) => m.name === name) ?? (name.startsWith('.') ? maps.find((m) => m.internal && m.name.endsWith(name)) : undefined);
  }

  setMaxEntries(map: string, maxEntries: number): this {
    native().mapSetMaxEntries(this.#handle, map, maxEntries);
    return this;
  }

  /**
   * Use an existing map (an adopted, pinned one) instead of creating this one at load. Its type,
   * key and value sizes and max entries must match the spec, or load() fails.
   */
  reuseMap(map: string, existing: BpfMap): this {
    native().mapReuseFd(this.#handle, map, existing.fd);
    return this;
  }

  setAutoload(program: string, autoload: boolean): this {
    native().programSetAutoload(this.#handle, program, autoload);
    return this;
  }

  setProgramType(program: string, type: number, expectedAttachType?: number): this {
    native().programSetType(this.#handle, program, type);
    if (expectedAttachType !== undefined) native().programSetExpectedAttachType(this.#handle, program, expectedAttachType);
    return this;
  }

  /** The variables of a data section (default .rodata), from BTF. */
  variables(section = '.rodata'): DatasecVar[] {
    return native().objectDatasec(this.#handle, section);
  }

  /** The initial value of a map with one (.rodata, .data), or undefined. */
  initialValue(map: string): Buffer | undefined {
    return native().mapInitialValue(this.#handle, this.#mapName(map)) ?? undefined;
  }

  setInitialValue(map: string, bytes: Uint8Array): this {
    const name = this.#mapName(map);
    const current = native().mapInitialValue(this.#handle, name);
    if (current && current.length !== bytes.length) throw new BufferSizeError(`initial value of map '${name}'`, current.length, bytes.length);
    native().mapSetInitialValue(this.#handle, name, bytes);
    return this;
  }

  /** The .rodata bytes the programs will see (const volatile globals). */
  rodata(): Buffer {
    const v = this.initialValue('.rodata');
    if (!v) throw new TypeError(`object '${this.path}' has no .rodata section`);
    return v;
  }

  setRodata(bytes: Uint8Array): this {
    return this.setInitialValue('.rodata', bytes);
  }

  /**
   * Set const volatile globals by name, e.g. { drop_byte: 1 }. Every name must
   * exist in .rodata and every value must fit its variable.
   */
  setConstants(values: Record<string, ConstantValue>): this {
    const vars = new Map(this.variables('.rodata').map((v) => [v.name, v]));
    const bytes = Buffer.from(this.rodata());
    const problems: string[] = [];
    for (const [name, value] of Object.entries(values)) {
      const v = vars.get(name);
      if (!v) {
        problems.push(`'${name}' is not a .rodata variable (have: ${[...vars.keys()].join(', ') || 'none'})`);
        continue;
      }
      const err = writeConstant(bytes, v, value);
      if (err) problems.push(`'${name}': ${err}`);
    }
    if (problems.length) throw new TypeError(`setConstants: ${problems.join('; ')}`);
    return this.setRodata(bytes);
  }

  /**
   * Load every autoload program and create every map. The spec stays usable:
   * it can be adjusted and loaded again.
   */
  async load(opts: LoadOptions = {}): Promise<Collection> {
    const h = this.#handle;
    await native().objectLoad(h, opts);
    const programs = new Map<string, Program>();
    const maps = new Map<string, BpfMap>();
    try {
      for (const p of native().objectPrograms(h)) {
        if (!p.autoload) continue;
        programs.set(p.name, new Program(native().dupFd(native().programFd(h, p.name)), p.name, p.type));
      }
      for (const m of native().objectMaps(h)) {
        maps.set(m.name, new BpfMap(native().dupFd(native().mapFd(h, m.name)), m));
      }
    } catch (e) {
      for (const p of programs.values()) p.close();
      for (const m of maps.values()) m.close();
      throw e;
    } finally {
      // Our duplicates keep programs and maps alive; the object's own fds go.
      native().objectClose(h);
    }
    return new Collection(programs, maps);
  }

  close(): void {
    if (!this.#h) return;
    // Now, not at garbage collection: the duplicates of reused (adopted) maps' fds go too.
    native().objectFree(this.#h);
    this.#h = undefined; // the handle's memory goes with the garbage collector
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #mapName(map: string): string {
    return this.map(map)?.name ?? map;
  }
}

/** Write value into bytes at variable v; returns a problem or undefined. */
function writeConstant(bytes: Buffer, v: DatasecVar, value: ConstantValue): string | undefined {
  if (value instanceof Uint8Array) {
    if (value.length !== v.size) return `needs ${v.size} bytes, got ${value.length}`;
    bytes.set(value, v.offset);
    return undefined;
  }
  let n: bigint;
  if (typeof value === 'boolean') n = value ? 1n : 0n;
  else if (typeof value === 'bigint') n = value;
  else if (Number.isSafeInteger(value)) n = BigInt(value);
  else return `${value} is not an integer`;
  if (![1, 2, 4, 8].includes(v.size)) return `has size ${v.size}: give a Buffer`;
  const bits = BigInt(v.size * 8);
  if (n < -(1n << (bits - 1n)) || n >= 1n << bits) return `${n} does not fit ${v.size} byte(s)`;
  const unsigned = BigInt.asUintN(v.size * 8, n);
  for (let i = 0; i < v.size; i++) bytes[v.offset + i] = Number((unsigned >> BigInt(8 * i)) & 0xffn);
  return undefined;
}

/** The loaded programs and maps of one object. Closing it closes them all. */
export class Collection {
  readonly programs: Map<string, Program>;
  readonly maps: Map<string, BpfMap>;

  constructor(programs: Map<string, Program>, maps: Map<string, BpfMap>) {
    this.programs = programs;
    this.maps = maps;
  }

  /** A program by name; throws if the collection has none of that name. */
  program(name: string): Program {
    const p = this.programs.get(name);
    if (!p) throw new TypeError(`no program '${name}' (have: ${[...this.programs.keys()].join(', ')})`);
    return p;
  }

  /** A map by name; internal maps also by section (".rodata", ".bss"). */
  map(name: string): BpfMap {
    let m = this.maps.get(name);
    if (!m && name.startsWith('.')) m = [...this.maps.values()].find((x) => x.name.endsWith(name));
    if (!m) throw new TypeError(`no map '${name}' (have: ${[...this.maps.keys()].join(', ')})`);
    return m;
  }

  close(): void {
    for (const p of this.programs.values()) p.close();
    for (const m of this.maps.values()) m.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
