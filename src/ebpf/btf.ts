/**
 * The BTF of an object file, as `bpftool -j btf dump file` gives it: the one BTF loader of the
 * project (scripts/gen-types.ts generates the shared types from it; the agent hashes map layouts
 * with it).
 */
import { execFileSync } from 'node:child_process';

export interface BtfMember { name: string; type_id: number; bits_offset: number; bitfield_size?: number }
export interface BtfVarSecinfo { type_id: number; offset: number; size: number }
export interface BtfType {
  id: number; kind: string; name: string; size?: number; type_id?: number; nr_elems?: number;
  encoding?: string; nr_bits?: number; bits_offset?: number;
  members?: BtfMember[]; values?: { name: string; val: number }[]; vars?: BtfVarSecinfo[];
}

export interface Btf {
  /** Every type by id. */
  types: Map<number, BtfType>;
  /** Named structs and enums. */
  byName: Map<string, BtfType>;
}

/** Read the BTF of an object file (needs bpftool on the PATH). */
export function loadBtf(object: string): Btf {
  const json = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', object], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const all = (JSON.parse(json) as { types: BtfType[] }).types;
  const types = new Map(all.map((t) => [t.id, t]));
  const byName = new Map<string, BtfType>();
  for (const t of all) if ((t.kind === 'STRUCT' || t.kind === 'ENUM') && t.name) byName.set(t.name, t);
  return { types, byName };
}

/** The type behind typedefs and qualifiers. */
export function resolveType(types: Map<number, BtfType>, id: number): BtfType {
  let t = types.get(id);
  while (t && (t.kind === 'TYPEDEF' || t.kind === 'VOLATILE' || t.kind === 'CONST')) t = types.get(t.type_id!);
  if (!t) throw new Error(`BTF type ${id} not found`);
  return t;
}

export function sizeOf(types: Map<number, BtfType>, t: BtfType): number {
  if (t.kind === 'ARRAY') return t.nr_elems! * sizeOf(types, resolveType(types, t.type_id!));
  return t.size!;
}
