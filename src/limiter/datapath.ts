/**
 * Load the data path: open the object, size its maps, set its load-time constants, load it, and
 * hand out its maps typed for the Limiter. The one way it is done, by the agent
 * (src/agent/protection.ts), the tests (test/lib/datapath.ts, test/stack/lib.ts) and the
 * benchmarks (bench/lib/datapath.ts); each keeps its own options.
 *
 * Sizes are set only for the maps the object declares (an object of another commit may lack
 * some), except sl_cidr, which is sized only when asked for.
 */
import { numPossibleCpus, ObjectSpec, type BpfMap, type Collection, type ConstantValue, type Program } from '../ebpf';
import type { MapName } from '../generated/types';
import { LIMITER_MAP_NAMES, RULE_SIZED_MAPS, STATE_MAP_NAMES, type LimiterMaps } from './limiter';
import type { Hook } from './plugins';

/** The XDP program and the tc egress program of bpf/sluice.bpf.c. */
export const PROGRAM = 'sluice_xdp';
export const TC_PROGRAM = 'sluice_egress';
/** Rule slots unless told otherwise (bpf/sluice.h sizes the rule maps for max_rules). */
export const DEFAULT_MAX_RULES = 1024;

export interface DataPathOptions {
  /** Entries of each per-client state map (STATE_MAP_NAMES); absent: the object's own size. */
  maxEntries?: number;
  /** Rule slots: sizes sl_rules and stats_map and sets the constant max_rules (default 1024). */
  maxRules?: number;
  /** Entries of one half of sl_lists (the trie holds two); absent: the object's own size. */
  maxListEntries?: number;
  /** Entries of the source-prefix trie sl_cidr (both policy halves); absent: the object's own size. */
  cidrEntries?: number;
  /** Load-time constants beyond (or instead of) max_rules and nr_cpus, e.g. coarse_clock. */
  constants?: Record<string, ConstantValue>;
  /** Load (and verify) the tc egress program too (default true; the agent loads it only when asked). */
  egress?: boolean;
  /** Maps the object must declare, checked before it is loaded (default: none checked here). */
  require?: readonly string[];
  /** Called with the sized spec before it is loaded (the agent reuses pinned maps there). */
  prepare?: (spec: ObjectSpec) => void;
}

/** A loaded data path: its collection (programs and maps by name) and its XDP program. */
export interface DataPath {
  readonly coll: Collection;
  readonly prog: Program;
  /** Close every program and map of the collection (pins keep what is pinned). */
  close(): void;
}

/** Open `object` and size it as `o` says; the caller loads (or closes) it. */
export function openDataPath(object: string, o: DataPathOptions = {}): ObjectSpec {
  const spec = ObjectSpec.open(object);
  try {
    const missing = (o.require ?? []).filter((name) => !spec.map(name));
    if (missing.length) throw new Error(`${object} has no map ${missing.join(', ')}: the Limiter needs it`);
    const maxRules = o.maxRules ?? DEFAULT_MAX_RULES;
    if (o.maxEntries) for (const name of STATE_MAP_NAMES) if (spec.map(name)) spec.setMaxEntries(name, o.maxEntries);
    if (o.egress === false && spec.program(TC_PROGRAM)) spec.setAutoload(TC_PROGRAM, false);
    if (o.maxListEntries && spec.map('sl_lists')) spec.setMaxEntries('sl_lists', 2 * o.maxListEntries);
    if (o.cidrEntries) spec.setMaxEntries('sl_cidr', o.cidrEntries);
    for (const [name, size] of Object.entries(RULE_SIZED_MAPS)) if (spec.map(name)) spec.setMaxEntries(name, size(maxRules));
    spec.setConstants({ max_rules: maxRules, nr_cpus: numPossibleCpus(), ...o.constants });
    return spec;
  } catch (e) {
    spec.close();
    throw e;
  }
}

/** Open, size, prepare and load `object`; the spec is closed again whatever happens. */
export async function loadDataPath(object: string, o: DataPathOptions = {}): Promise<DataPath> {
  const spec = openDataPath(object, o);
  try {
    o.prepare?.(spec);
    const coll = await spec.load();
    const prog = coll.programs.get(PROGRAM);
    if (!prog) {
      coll.close();
      throw new Error(`${object} has no program ${PROGRAM}`);
    }
    return { coll, prog, close: () => coll.close() };
  } finally {
    spec.close();
  }
}

/**
 * The maps a Limiter writes, taken from a collection or from pins by name; `missing` makes the
 * error for a map that is not there (each caller words it for its reader).
 */
export function limiterMapsOf(
  maps: ReadonlyMap<string, BpfMap>,
  missing: (name: string) => Error = (name) => new Error(`map ${name} missing from the object`),
): LimiterMaps {
  const out: Partial<LimiterMaps> = {};
  for (const name of LIMITER_MAP_NAMES) {
    const m = maps.get(name);
    if (!m) throw missing(name);
    out[name] = m;
  }
  return out as LimiterMaps;
}

/**
 * A map of a collection or of pins by its name, checked against the maps the object declares
 * (src/generated/types.ts, Maps: a misspelt or removed map fails to compile); undefined when this
 * object or these pins lack it (an older build).
 */
export function mapOf(maps: { get(name: string): BpfMap | undefined }, name: MapName): BpfMap | undefined {
  return maps.get(name);
}

/** The program array of each plugin hook. */
export const PLUGIN_MAPS = { xdp: 'sl_plugins_xdp', tc: 'sl_plugins_tc' } as const satisfies Record<Hook, MapName>;
