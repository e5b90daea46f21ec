/**
 * The YAML document of a config or policy file and its problems: where a path is (its line), what
 * zod's issues say as problems, unknown keys with a suggestion, and the frozen result. Shared by
 * load.ts (the config file) and policy-file.ts (the policy file).
 */
import { isMap, isPair, isScalar, isSeq, type LineCounter, type Document, type Node } from 'yaml';
import type { z as zod } from 'zod';
import { pathText } from '../limiter/text';
import { ConfigError, type ConfigProblem } from './errors';
import { configSchema } from './schema';

export type Seg = string | number;

/** The YAML node at a path (the key's node when `key`), or the nearest ancestor that exists. */
function nodeAt(doc: Document, path: readonly Seg[], key = false): Node | undefined {
  let node = doc.contents as Node | null;
  let found: Node | undefined = node ?? undefined;
  for (let i = 0; i < path.length && node; i++) {
    const seg = path[i]!;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      if (key && i === path.length - 1) return pair.key as Node;
      node = (pair.value as Node | null) ?? (pair.key as Node);
    } else if (isSeq(node) && typeof seg === 'number') {
      node = (node.items[seg] as Node | undefined) ?? null;
    } else {
      break;
    }
    if (node) found = node;
  }
  return found;
}

export function lineOf(doc: Document, lc: LineCounter, path: readonly Seg[], key = false): number | undefined {
  const n = nodeAt(doc, path, key);
  return n?.range ? lc.linePos(n.range[0]).line : undefined;
}

/** The object schema's keys at a path of a schema (for "expected one of" on unknown keys). */
function keysAt(path: readonly Seg[], root: zod.ZodType): string[] {
  let s = (root as unknown as { _zod: { def: Record<string, unknown> } });
  const unwrap = (): void => {
    for (;;) {
      const def = s._zod.def;
      if (['optional', 'nullable', 'default', 'prefault'].includes(def['type'] as string)) s = def['innerType'] as typeof s;
      else if (def['type'] === 'pipe') s = def['in'] as typeof s;
      else return;
    }
  };
  unwrap();
  for (const seg of path) {
    const def = s._zod.def;
    if (def['type'] === 'object' && typeof seg === 'string') s = (def['shape'] as Record<string, typeof s>)[seg]!;
    else if (def['type'] === 'array' && typeof seg === 'number') s = def['element'] as typeof s;
    else return [];
    if (!s) return [];
    unwrap();
  }
  const def = s._zod.def;
  return def['type'] === 'object' ? Object.keys(def['shape'] as object) : [];
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return d[b.length]!;
}

/** Names people write for a key that has another name here (from other tools, or in full). */
const SYNONYMS: Record<string, string[]> = {
  proto: ['protocol', 'protocols', 'ip_proto'],
  dst_port: ['port', 'ports', 'dport', 'dest_port', 'destination_port'],
  src: ['source', 'from', 'src_ip', 'saddr'],
  dst: ['destination', 'to', 'dst_ip', 'daddr'],
  tcp_flags: ['flags'],
  rate: ['pps', 'limit'],
  bytes_rate: ['bps', 'bandwidth'],
  on_exceed: ['action', 'on_exceeded'],
  max_entries: ['entries'],
};

function unknownKeyMessage(key: string, allowed: string[]): string {
  const synonym = allowed.find((k) => SYNONYMS[k]?.includes(key.toLowerCase()));
  const near = synonym ?? allowed.filter((k) => distance(k, key) <= 2).sort((x, y) => distance(x, key) - distance(y, key))[0];
  return `unknown key${near ? ` (did you mean ${near}?)` : ''}; expected ${allowed.length ? `one of ${allowed.join(', ')}` : 'no keys here'}`;
}

/**
 * A key as messages show it: one that looks like a key (a misspelt one is worth seeing), or only
 * its length: a file named by mistake parses as keys such as `root:$y$…` (a password file's lines).
 */
export function keyShown(k: string): string {
  return /^[A-Za-z_][A-Za-z0-9_-]{0,39}$/.test(k) ? k : `<key of ${k.length} characters, not shown>`;
}

/**
 * Refuse, without a word of its content, a document none of whose top-level keys is one of
 * `known`: not a file of this kind (a password file, a key, another program's config).
 */
export function notThisKind(raw: unknown, known: readonly string[], file: string, what: string): void {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return;
  const keys = Object.keys(raw);
  if (keys.length && !keys.some((k) => known.includes(k))) {
    throw new ConfigError(file, [{ path: '', message: `not a ${what}: none of its ${keys.length} top-level key${keys.length === 1 ? '' : 's'} is one of ${known.join(', ')} (its content is not shown: is this the right file?)` }]);
  }
}

/** Every issue of a zod error as a problem with its path and line. `root`: the schema parsed at `at`. */
export function zodProblems(error: zod.ZodError, doc: Document, lc: LineCounter, at: Seg[] = [], root: zod.ZodType = configSchema): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const iss of error.issues) {
    const path = [...at, ...iss.path.filter((s): s is Seg => typeof s === 'string' || typeof s === 'number')];
    if (iss.code === 'unrecognized_keys') {
      for (const k of iss.keys) {
        const shownKey = keyShown(k);
        out.push({ path: pathText([...path, shownKey]), line: lineOf(doc, lc, [...path, k], true), message: shownKey === k ? unknownKeyMessage(k, keysAt(path.slice(at.length), root)) : `unknown key; expected ${keysAt(path.slice(at.length), root).join(', ') || 'no keys here'}` });
      }
      continue;
    }
    out.push({ path: pathText(path), line: lineOf(doc, lc, path), message: iss.message });
  }
  return out;
}

/** In the order of the file; problems without a line first, otherwise as found. */
export function sortByLine(ps: ConfigProblem[]): ConfigProblem[] {
  return ps.map((p, i) => [p, i] as const).sort(([a, i], [b, j]) => (a.line ?? 0) - (b.line ?? 0) || i - j).map(([p]) => p);
}

export function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}
