/**
 * Generates src/generated/types.ts from the BTF of the built object: one interface, size constant,
 * encoder and decoder per struct that bpf/sluice.h defines, and one constant object per enum.
 * The struct list comes from the header, the layout from BTF (`bpftool -j btf dump file`), so a
 * change to the header without regenerating fails `--check` (run by the test suite). The lab's
 * header (bpf/lab/lab.h, objects built by `make -C bpf/lab`) gives src/generated/lab.ts the same way.
 *
 *   node dist/scripts/gen-types.js          write src/generated/types.ts and lab.ts
 *   node dist/scripts/gen-types.js --check  exit 1 if a committed file differs
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadBtf, resolveType, sizeOf, type Btf, type BtfType } from '../src/ebpf/btf';
import { REPO } from '../src/ebpf/paths';

const repo = REPO;

/** One generated file: the structs and enums named `<prefix>…` in a header, laid out as the BTF of
 *  the objects says (a struct needs to be in the BTF of one of them). */
interface Target {
  objects: string[];
  header: string;
  prefix: string;
  out: string;
  /** Also emit the table of the first object's maps (name -> type, key, value). */
  maps?: boolean;
}

const TARGETS: Target[] = [
  { objects: ['bpf/sluice_test.bpf.o'], header: 'bpf/sluice.h', prefix: 'sl_', out: 'src/generated/types.ts', maps: true },
  { objects: ['bpf/lab/count.bpf.o', 'bpf/lab/flood.bpf.o'], header: 'bpf/lab/lab.h', prefix: 'lab_', out: 'src/generated/lab.ts' },
];

type Field =
  | { kind: 'num'; bytes: 1 | 2 | 4; signed: boolean }
  | { kind: 'big'; signed: boolean }
  | { kind: 'bytes'; len: number }
  | { kind: 'array'; elem: Field; n: number; elemSize: number }
  | { kind: 'struct'; name: string };

function load(object: string): Btf {
  return loadBtf(join(repo, object));
}

function fieldOf(types: Map<number, BtfType>, id: number, name: string): Field {
  const t = resolveType(types, id);
  switch (t.kind) {
    case 'INT':
    case 'ENUM': {
      const signed = t.kind === 'INT' && !/^(__u|unsigned|_Bool|char)/.test(t.name) && !t.name.startsWith('u');
      if (t.size === 8) return { kind: 'big', signed };
      return { kind: 'num', bytes: t.size as 1 | 2 | 4, signed };
    }
    case 'STRUCT':
      return { kind: 'struct', name: t.name };
    case 'ARRAY': {
      const elemT = resolveType(types, t.type_id!);
      const elem = fieldOf(types, t.type_id!, name);
      if (elem.kind === 'num' && elem.bytes === 1) return { kind: 'bytes', len: t.nr_elems! };
      return { kind: 'array', elem, n: t.nr_elems!, elemSize: sizeOf(types, elemT) };
    }
    default:
      throw new Error(`unsupported BTF kind ${t.kind} for field ${name}`);
  }
}

const camel = (s: string): string => s.replace(/^sl_/, '').replace(/(^|_)([a-z0-9])/g, (_, __, c: string) => c.toUpperCase());

function tsType(f: Field): string {
  switch (f.kind) {
    case 'num': return 'number';
    case 'big': return 'bigint';
    case 'bytes': return 'Buffer';
    case 'array': return `${tsType(f.elem)}[]`;
    case 'struct': return camel(f.name);
  }
}

function readExpr(f: Field, off: string): string {
  switch (f.kind) {
    case 'num': return f.bytes === 1 ? `b.read${f.signed ? 'Int8' : 'UInt8'}(${off})` : `b.read${f.signed ? 'Int' : 'UInt'}${f.bytes * 8}LE(${off})`;
    case 'big': return `b.read${f.signed ? 'BigInt64' : 'BigUInt64'}LE(${off})`;
    case 'bytes': return `Buffer.from(b.subarray(${off}, ${off} + ${f.len}))`;
    case 'array': return `Array.from({ length: ${f.n} }, (_, i) => ${readExpr(f.elem, `${off} + i * ${f.elemSize}`)})`;
    case 'struct': return `decode${camel(f.name)}(b, ${off})`;
  }
}

function writeStmt(f: Field, off: string, val: string, depth = 0): string {
  switch (f.kind) {
    case 'num': return f.bytes === 1 ? `b.write${f.signed ? 'Int8' : 'UInt8'}(${val}, ${off});` : `b.write${f.signed ? 'Int' : 'UInt'}${f.bytes * 8}LE(${val}, ${off});`;
    case 'big': return `b.write${f.signed ? 'BigInt64' : 'BigUInt64'}LE(BigInt(${val}), ${off});`;
    case 'bytes': return `Buffer.from(${val}).copy(b, ${off}, 0, ${f.len});`;
    case 'array': {
      const i = `i${depth}`;
      return `for (let ${i} = 0; ${i} < Math.min(${f.n}, ${val}.length); ${i}++) { ${writeStmt(f.elem, `${off} + ${i} * ${f.elemSize}`, `${val}[${i}]!`, depth + 1)} }`;
    }
    case 'struct': return `encode${camel(f.name)}(${val}, b, ${off});`;
  }
}

export function generate(target: Target = TARGETS[0]!): string {
  const loaded = target.objects.map((o) => ({ object: o, ...load(o) }));
  // The first object whose BTF has the type decides its layout (and the ids of its members).
  const find = (name: string): { types: Map<number, BtfType>; t: BtfType | undefined } => {
    const hit = loaded.find((l) => l.byName.has(name)) ?? loaded[0]!;
    return { types: hit.types, t: hit.byName.get(name) };
  };
  const header = readFileSync(join(repo, target.header), 'utf8');
  const structNames = [...header.matchAll(new RegExp(`^struct (${target.prefix}\\w+) \\{`, 'gm'))].map((m) => m[1]!);
  const enumNames = [...header.matchAll(new RegExp(`^enum (${target.prefix}\\w+) \\{`, 'gm'))].map((m) => m[1]!);
  const OBJECT = target.objects.join(', ');
  const out: string[] = [
    `// Generated by scripts/gen-types.ts from the BTF of ${OBJECT} and the struct list of`,
    `// ${target.header}. Do not edit: run \`npm run gen:types\` after changing the header.`,
    '/* eslint-disable */',
    '',
  ];
  for (const name of enumNames) {
    const { t } = find(name);
    if (!t || t.kind !== 'ENUM') throw new Error(`enum ${name} of ${target.header} is missing from the BTF (add it to a struct the object uses, like sl_btf_anchor)`);
    const prefix = commonPrefix(t.values!.map((v) => v.name));
    out.push(`export const ${camel(name)} = {`);
    for (const v of t.values!) out.push(`  ${v.name.slice(prefix.length)}: ${v.val},`);
    out.push('} as const;');
    out.push(`/** One value of enum ${name}. */`);
    out.push(`export type ${camel(name)}Value = (typeof ${camel(name)})[keyof typeof ${camel(name)}];`, '');
  }
  if (target.maps) out.push(...mapsTable(loaded[0]!, structNames));
  for (const name of structNames) {
    const { types, t } = find(name);
    if (!t || t.kind !== 'STRUCT') throw new Error(`struct ${name} of ${target.header} is missing from the BTF of ${OBJECT}`);
    const T = camel(name);
    const fields = t.members!.map((m) => {
      if (m.bitfield_size) throw new Error(`${name}.${m.name}: bitfields are not supported in shared structs`);
      return { name: m.name, off: m.bits_offset / 8, f: fieldOf(types, m.type_id, m.name) };
    });
    out.push(`export interface ${T} {`);
    for (const f of fields) out.push(`  ${f.name}: ${tsType(f.f)};`);
    out.push('}', '');
    out.push(`export const ${name.toUpperCase()}_SIZE = ${t.size};`, '');
    out.push(`export function decode${T}(b: Buffer, off = 0): ${T} {`);
    out.push('  return {');
    for (const f of fields) out.push(`    ${f.name}: ${readExpr(f.f, `off + ${f.off}`)},`);
    out.push('  };', '}', '');
    out.push(`export function encode${T}(v: Partial<${T}>, b: Buffer = Buffer.alloc(${t.size}), off = 0): Buffer {`);
    out.push(`  if (b.length < off + ${t.size}) throw new TypeError(\`${name} needs ${t.size} bytes at offset \${off}, buffer has \${b.length}\`);`);
    for (const f of fields) out.push(`  if (v.${f.name} !== undefined) { ${writeStmt(f.f, `off + ${f.off}`, `v.${f.name}`)} }`);
    out.push('  return b;', '}', '');
  }
  return out.join('\n');
}

/**
 * The maps the object declares (its .maps section, in BTF order): the map type (BPF_MAP_TYPE_*),
 * max_entries as declared, and key and value as a struct of this file or a size in bytes; then
 * MapName (their union) and DataPathMaps<M> (one M per map, e.g. a BpfMap), so that a map is named
 * by a checked name, never by a string built at run time.
 */
function mapsTable(obj: Btf & { object: string }, structNames: string[]): string[] {
  const { types } = obj;
  const sec = [...types.values()].find((t) => t.kind === 'DATASEC' && t.name === '.maps');
  if (!sec) throw new Error(`${obj.object} has no .maps section in its BTF`);
  const num = (id: number): number => resolveType(types, resolveType(types, id).type_id!).nr_elems!; // __uint(x, N): int (*x)[N]
  const side = (id: number): string => {
    const t = resolveType(types, resolveType(types, id).type_id!); // __type(key, T): T *key
    if (t.kind === 'STRUCT' && structNames.includes(t.name)) return `{ struct: '${t.name}', size: ${t.size} }`;
    return `{ size: ${sizeOf(types, t)} }`;
  };
  const out = [
    `/** The maps of ${obj.object} (its .maps section): map type (BPF_MAP_TYPE_*), declared max_entries, key`,
    ' *  and value (the struct of this file that lays them out, and their size). sl_test: the test build only. */',
    'export const Maps = {',
  ];
  for (const v of sec.vars!) {
    const variable = types.get(v.type_id)!;
    const def = resolveType(types, variable.type_id!);
    const m = new Map(def.members!.map((x) => [x.name, x.type_id]));
    const parts = [`type: ${num(m.get('type')!)}`];
    if (m.has('max_entries')) parts.push(`maxEntries: ${num(m.get('max_entries')!)}`);
    if (m.has('key')) parts.push(`key: ${side(m.get('key')!)}`);
    else if (m.has('key_size')) parts.push(`key: { size: ${num(m.get('key_size')!)} }`);
    if (m.has('value')) parts.push(`value: ${side(m.get('value')!)}`);
    else if (m.has('value_size')) parts.push(`value: { size: ${num(m.get('value_size')!)} }`);
    else if (m.has('values')) parts.push('value: { size: 4 }'); // an array of maps or programs: ids
    out.push(`  ${variable.name}: { ${parts.join(', ')} },`);
  }
  out.push('} as const;', '');
  out.push('/** The name of a map of the object. */', 'export type MapName = keyof typeof Maps;', '');
  out.push('/** One M (a BpfMap, a size, …) for each map of the object, by name. */');
  out.push('export type DataPathMaps<M> = { [K in MapName]: M };', '');
  return out;
}

function commonPrefix(names: string[]): string {
  let p = names[0] ?? '';
  for (const n of names) while (!n.startsWith(p)) p = p.slice(0, -1);
  return p.slice(0, p.lastIndexOf('_') + 1);
}

if (require.main === module) {
  for (const target of TARGETS) {
    const text = generate(target);
    const OUT = join(repo, target.out);
    if (process.argv.includes('--check')) {
      const current = readFileSync(OUT, 'utf8');
      if (current !== text) {
        console.error(`${target.out} does not match the BTF of ${target.objects.join(', ')}: run \`npm run gen:types\` and commit the result.`);
        process.exit(1);
      }
      console.log(`${target.out} matches the object BTF`);
    } else {
      writeFileSync(OUT, text);
      console.log(`wrote ${OUT}`);
    }
  }
}
