/**
 * The ABI stamp of a set of pinned maps: which layout of the maps, and which meaning of their
 * contents (bpf/sluice.h's SL_ABI_VERSION), the state in them was written for. The control plane
 * writes it into the map sl_abi_map when it creates maps, and checks it before adopting pins, so
 * that state is never adopted by a program that would read it differently.
 *
 * The layout hash of an object: for each map the object declares in its .maps section, a canonical
 * description of its BTF definition (the map's type, flags and key/value sizes, and recursively the
 * key and value types: struct and member names, offsets, sizes, integer encodings, enum values;
 * never max_entries, which are sized at load). Each description has a digest (the first 8 bytes of
 * its SHA-256, hex); the layout hash is the first 8 bytes, as a little-endian u64, of the SHA-256 of
 * the lines "<map name> <digest>\n" sorted by name. .rodata, .data and .bss are not maps of the
 * layout. The digests of the pinned set are kept in the settings too (Settings.mapLayouts), so that
 * an object that adds maps (or lacks maps pinned by another one, like the test build's) can still
 * be checked map by map against what is pinned.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { MapType, type BpfMap } from '../ebpf';
import { loadBtf, type Btf, type BtfType } from '../ebpf/btf';
import { Abi, decodeAbiStamp, encodeAbiStamp, SL_ABI_STAMP_SIZE } from '../generated/types';

/** The map that holds the stamp: ARRAY, one entry, value struct sl_abi_stamp. */
export const ABI_MAP = 'sl_abi_map';

export interface Stamp {
  layoutHash: bigint;
  abiVersion: number;
}

export interface ObjectLayout {
  object: string;
  /** Map name -> canonical description of its definition. */
  descriptions: Map<string, string>;
  /** Map name -> digest of its description (16 hex digits). */
  digests: Record<string, string>;
  /** The layout hash over every map of the object. */
  hash: bigint;
  /** SL_ABI_VERSION as the object's BTF has it (enum sl_abi), or undefined if it has none. */
  abiVersion: number | undefined;
  /** Whether the object declares sl_abi_map (objects built before stamps did not). */
  hasStampMap: boolean;
}

export const hex = (h: bigint): string => `0x${h.toString(16).padStart(16, '0')}`;

/** The layout hash of a set of map digests (name -> digest). */
export function layoutHashOf(digests: Record<string, string>): bigint {
  const text = Object.keys(digests).sort().map((n) => `${n} ${digests[n]}\n`).join('');
  return createHash('sha256').update(text).digest().readBigUInt64LE(0);
}

/** Layouts by object path, mtime, size and inode: reading the BTF costs a bpftool run (~10 ms). */
const cache = new Map<string, ObjectLayout>();

/** The layout of an object file (cached while the file does not change). */
export function objectLayout(object: string): ObjectLayout {
  const path = resolve(object);
  const st = statSync(path, { bigint: true });
  const key = `${path}\0${st.mtimeNs}\0${st.size}\0${st.ino}`;
  let l = cache.get(key);
  if (!l) {
    l = layoutOf(path, loadBtf(path));
    for (const k of cache.keys()) if (k.startsWith(`${path}\0`)) cache.delete(k);
    cache.set(key, l);
  }
  return l;
}

export function layoutOf(object: string, btf: Btf): ObjectLayout {
  const descriptions = new Map<string, string>();
  for (const sec of btf.types.values()) {
    if (sec.kind !== 'DATASEC' || sec.name !== '.maps') continue;
    for (const v of sec.vars ?? []) {
      const variable = btf.types.get(v.type_id);
      if (!variable || variable.kind !== 'VAR') continue;
      descriptions.set(variable.name, describeMapDef(btf, variable.type_id!));
    }
  }
  const digests: Record<string, string> = {};
  for (const [name, d] of [...descriptions].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    digests[name] = createHash('sha256').update(d).digest().subarray(0, 8).toString('hex');
  }
  const abi = btf.byName.get('sl_abi');
  const version = abi?.kind === 'ENUM' ? abi.values?.find((v) => v.name === 'SL_ABI_VERSION')?.val : undefined;
  return { object, descriptions, digests, hash: layoutHashOf(digests), abiVersion: version, hasStampMap: descriptions.has(ABI_MAP) };
}

/** The stamp of fresh maps made from this object. */
export function stampOf(l: ObjectLayout): Stamp {
  return { layoutHash: l.hash, abiVersion: l.abiVersion ?? Abi.VERSION };
}

/**
 * A BTF-defined map: a struct whose members are pointers to arrays (__uint: the number is the
 * array's length), pointers to types (__type) or an array of pointers to inner map definitions
 * (__array). Members in name order; max_entries left out.
 */
function describeMapDef(btf: Btf, id: number): string {
  const def = skipQualifiers(btf, id);
  if (def.kind !== 'STRUCT') return describeType(btf, id, 0);
  const parts: string[] = [];
  for (const m of [...def.members ?? []].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (m.name === 'max_entries') continue;
    const t = skipQualifiers(btf, m.type_id);
    if (m.name === 'values' && t.kind === 'ARRAY') {
      // __array(values, struct inner_def): the inner map's definition; or a function prototype.
      const ptr = skipQualifiers(btf, t.type_id!);
      parts.push(`values=${ptr.kind === 'PTR' ? describeMapDef(btf, ptr.type_id!) : describeType(btf, t.type_id!, 0)}`);
    } else if (t.kind === 'PTR') {
      const target = skipQualifiers(btf, t.type_id!);
      if (target.kind === 'ARRAY' && m.name !== 'key' && m.name !== 'value') parts.push(`${m.name}=${target.nr_elems}`);
      else parts.push(`${m.name}=${describeType(btf, t.type_id!, 0)}`);
    } else {
      parts.push(`${m.name}=${describeType(btf, m.type_id, 0)}`);
    }
  }
  return `map{${parts.join(';')}}`;
}

function skipQualifiers(btf: Btf, id: number): BtfType {
  let t = btf.types.get(id);
  while (t && (t.kind === 'VOLATILE' || t.kind === 'CONST' || t.kind === 'RESTRICT' || t.kind === 'TYPE_TAG')) t = btf.types.get(t.type_id!);
  if (!t) throw new Error(`BTF type ${id} not found`);
  return t;
}

const byName = (a: { name: string }, b: { name: string }): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

function describeType(btf: Btf, id: number, depth: number): string {
  if (id === 0) return 'void';
  if (depth > 32) throw new Error(`BTF type ${id} nests too deep`);
  const t = skipQualifiers(btf, id);
  const d = depth + 1;
  switch (t.kind) {
    case 'TYPEDEF':
      return `${t.name}=${describeType(btf, t.type_id!, d)}`;
    case 'INT':
      return `int(${t.name},${t.size},${t.encoding ?? ''},${t.bits_offset ?? 0},${t.nr_bits ?? (t.size ?? 0) * 8})`;
    case 'FLOAT':
      return `float(${t.name},${t.size})`;
    case 'ENUM':
    case 'ENUM64':
      return `enum ${t.name}/${t.size}{${[...t.values ?? []].sort(byName).map((v) => `${v.name}=${v.val}`).join(',')}}`;
    case 'STRUCT':
    case 'UNION':
      return `${t.kind.toLowerCase()} ${t.name}/${t.size}{${(t.members ?? []).map((m) => `${m.name}@${m.bits_offset}${m.bitfield_size ? `:${m.bitfield_size}` : ''}=${describeType(btf, m.type_id, d)}`).join(';')}}`;
    case 'ARRAY':
      return `[${t.nr_elems}]${describeType(btf, t.type_id!, d)}`;
    case 'PTR': {
      // Not followed (a pointer's target is not part of the value's bytes): its name only.
      const target = t.type_id ? skipQualifiers(btf, t.type_id) : undefined;
      return `*${target ? `${target.kind.toLowerCase()} ${target.name}` : 'void'}`;
    }
    case 'FWD':
      return `fwd ${t.name}`;
    default:
      return `${t.kind.toLowerCase()} ${t.name}`;
  }
}

/** The stamp in a pinned sl_abi_map; undefined if the map is not one (wrong type or sizes). */
export function readStamp(map: BpfMap): Stamp | undefined {
  if (map.type !== MapType.Array || map.keySize !== 4 || map.valueSize !== SL_ABI_STAMP_SIZE) return undefined;
  const v = map.lookup(Buffer.alloc(4));
  if (!v) return undefined;
  const s = decodeAbiStamp(v);
  return { layoutHash: s.layout_hash, abiVersion: s.abi_version };
}

export function writeStamp(map: BpfMap, s: Stamp): void {
  map.update(Buffer.alloc(4), encodeAbiStamp({ layout_hash: s.layoutHash, abi_version: s.abiVersion, pad: 0 }));
}

export const describeStamp = (s: Stamp): string => `layout ${hex(s.layoutHash)}, ABI version ${s.abiVersion}`;

/**
 * Whether pins stamped `pinned` (undefined: no sl_abi_map; null: a map that is not a stamp) with
 * the maps `names` may be adopted by an object of layout `l`, given the digests recorded with the
 * pins. Returns what differs, or undefined when they fit; and the digests of the pinned set once
 * the object's new maps are pinned alongside.
 */
export function checkStamp(
  pinned: Stamp | undefined | null, names: readonly string[], recorded: Record<string, string> | undefined, l: ObjectLayout,
): { problem: string } | { problem?: undefined; digests: Record<string, string> } {
  const want = stampOf(l);
  const theirs = `this object (${l.object}) has ${describeStamp(want)}`;
  if (pinned === undefined) return { problem: `the pins have no ABI stamp (no maps/${ABI_MAP}: they were made before pins were stamped); ${theirs}` };
  if (pinned === null) return { problem: `the pinned ${ABI_MAP} is not an ABI stamp (wrong type or size); ${theirs}` };
  if (pinned.layoutHash === 0n && pinned.abiVersion === 0) return { problem: `the pinned ABI stamp is empty (never written); ${theirs}` };
  const both = `the pins have ${describeStamp(pinned)}, ${theirs}`;
  if (pinned.abiVersion !== want.abiVersion) return { problem: `the ABI version differs (what the state words mean): ${both}` };
  const next = (base: Record<string, string>): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const n of new Set([...names, ...Object.keys(l.digests)])) out[n] = l.digests[n] ?? base[n]!;
    return out;
  };
  // The pins were made by an object of this very layout.
  if (pinned.layoutHash === l.hash && names.every((n) => n in l.digests)) return { digests: next({}) };
  // Otherwise the digests recorded with the pins must be the ones the stamp covers, and every
  // pinned map this object declares must have its layout there.
  if (!recorded || layoutHashOf(recorded) !== pinned.layoutHash) return { problem: `the layout hash differs: ${both}` };
  const unknown = names.filter((n) => !(n in recorded));
  const differ = names.filter((n) => n in recorded && n in l.digests && recorded[n] !== l.digests[n]);
  if (unknown.length || differ.length) {
    return { problem: `${[differ.length ? `the layout of ${differ.join(', ')} differs` : '', unknown.length ? `${unknown.join(', ')} ${unknown.length === 1 ? 'has' : 'have'} no recorded layout` : ''].filter(Boolean).join(' and ')}: ${both}` };
  }
  return { digests: next(recorded) };
}
