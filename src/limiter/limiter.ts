/**
 * The limiter as the control plane sees it: the data path's maps, written through the binding.
 * Applies policies atomically (write the inactive half, wait out readers, flip one version number),
 * reads counters and settings. Knows nothing about interfaces or pins (that is src/agent).
 */
import type { BpfMap } from '../ebpf';
import {
  decodeConfig, decodeCounters, decodeHalf, decodeListVal, decodeLpmKey, decodeRule, encodeCands, encodeConfig,
  encodeGeoVal, encodeHalf, encodeListVal, encodeLpmKey, encodeRule, type Config, type Counters, type Rule,
  SL_GEO_VAL_SIZE,
  SL_CONFIG_SIZE, SL_COUNTERS_SIZE, SL_LPM_KEY_SIZE, SL_RULE_SIZE,
} from '../generated/types';
import { compileLists, type ListEntry, type Lists } from './lists';
import { compilePolicy, PolicyError, type CompiledPolicy, type PolicySpec } from './policy';

/** The maps of one loaded (or adopted) data path, by their names in bpf/maps.h. */
export interface LimiterMaps {
  config_map: BpfMap;
  stats_map: BpfMap;
  rate_limit_map: BpfMap;
  sl_rules: BpfMap;
  sl_policy: BpfMap;
  sl_cidr: BpfMap;
  sl_lists: BpfMap;
  sl_rcu: BpfMap;
  sl_rcu_inner: BpfMap;
  sl_geo: BpfMap;
}

export const LIMITER_MAP_NAMES: (keyof LimiterMaps)[] = [
  'config_map', 'stats_map', 'rate_limit_map', 'sl_rules', 'sl_policy', 'sl_cidr', 'sl_lists', 'sl_rcu', 'sl_rcu_inner', 'sl_geo',
];

/** Maps sized by the number of rule slots: name -> entries for max_rules slots. */
export const RULE_SIZED_MAPS: Record<string, (maxRules: number) => number> = {
  sl_rules: (n) => 2 * n,
  stats_map: (n) => n + 1,
  sl_agg: (n) => n,
};

/** Source prefix -> GeoIP tier (1..255), as compiled by src/limiter/geoip.ts. */
export interface GeoEntry {
  family: 4 | 6;
  plen: number;
  addr: Buffer;
  tier: number;
}

const u32key = (i: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(i);
  return b;
};

/** Counters summed over CPUs. */
export type CounterTotals = Counters;

export function addCounters(a: Counters, b: Counters): Counters {
  const add = (x: bigint[], y: bigint[]): bigint[] => x.map((v, i) => v + y[i]!);
  return {
    packets: add(a.packets, b.packets),
    bytes: add(a.bytes, b.bytes),
    reason_packets: add(a.reason_packets, b.reason_packets),
    reason_bytes: add(a.reason_bytes, b.reason_bytes),
    new_states: a.new_states + b.new_states,
  };
}

export class Limiter {
  readonly maxRules: number;
  /** The lists applied last and what they compiled to (compileLists is a pure function of them). */
  #lists: { text: string; entries: ListEntry[] } | undefined;

  constructor(readonly maps: LimiterMaps) {
    this.maxRules = maps.sl_rules.maxEntries / 2;
    if (maps.stats_map.maxEntries !== this.maxRules + 1) {
      throw new Error(`stats_map has ${maps.stats_map.maxEntries} entries, expected ${this.maxRules + 1} for ${this.maxRules} rule slots`);
    }
  }

  config(): Config {
    return decodeConfig(this.maps.config_map.lookup(u32key(0))!);
  }

  setConfig(change: Partial<Omit<Config, 'version' | 'pad'>>): void {
    const cur = this.config();
    const next = encodeConfig({ ...cur, ...change, version: cur.version }, Buffer.alloc(SL_CONFIG_SIZE));
    this.maps.config_map.update(u32key(0), next);
  }

  /** The live policy version; the live half is version & 1. */
  version(): number {
    return this.config().version;
  }

  /** Rules of a half, by slot (all slots; unused ones are whatever was written last). */
  rulesOf(half: number): Rule[] {
    const out: Rule[] = [];
    for (let s = 0; s < this.maxRules; s++) out.push(decodeRule(this.maps.sl_rules.lookup(u32key(half * this.maxRules + s))!));
    return out;
  }

  /**
   * Wait until no packet can still be reading a table that was live before the last flip.
   * Updating an array-of-maps entry from user space returns after synchronize_rcu().
   */
  waitForReaders(): void {
    this.maps.sl_rcu.update(u32key(0), u32key(this.maps.sl_rcu_inner.fd));
  }

  /**
   * Compile and apply a policy atomically. An invalid policy throws PolicyError before anything is
   * written; the data path sees the old policy until the one write that flips the version.
   */
  applyPolicy(spec: PolicySpec, geo?: { entries: GeoEntry[]; hash: bigint }): CompiledPolicy {
    const compiled = compilePolicy(spec, this.maxRules);
    const cur = this.config();
    const version = (cur.version + 1) >>> 0;
    const half = version & 1;
    const idle = decodeHalf(this.maps.sl_policy.lookup(u32key(half))!);

    // Epochs: a rule keeps its keys' state unless its algorithm or window changed. A new epoch
    // is the new version number, which no state can carry yet.
    // Slots that the live policy did not use carry an older version.
    const live = new Map<number, Rule>();
    for (const r of this.rulesOf(cur.version & 1)) if (r.version === cur.version) live.set(r.id, r);

    this.waitForReaders();
    compiled.rules.forEach((r, slot) => {
      const prev = live.get(r.id);
      const epoch = prev && prev.alg === r.alg && prev.window_ms === r.window_ms ? prev.epoch : version;
      this.maps.sl_rules.update(u32key(half * this.maxRules + slot), encodeRule({ ...r, version, epoch }, Buffer.alloc(SL_RULE_SIZE)));
    });
    for (const key of [...this.maps.sl_cidr.keys()]) {
      if (decodeLpmKey(key).half === half) this.maps.sl_cidr.delete(key);
    }
    for (const c of compiled.cidrs) {
      const key = encodeLpmKey({ prefixlen: 32 + c.plen, half, family: c.family, addr: c.addr }, Buffer.alloc(SL_LPM_KEY_SIZE));
      this.maps.sl_cidr.update(key, encodeCands({ version, n: c.slots.length, slot: c.slots }));
    }
    // The GeoIP entries of this half are rewritten only when the dataset differs from the one
    // the half already holds (a dataset is large; most policy changes do not touch it).
    const geoEntries = geo?.entries ?? [];
    const geoHash = geo?.hash ?? 0n;
    let geoVersion = idle.geo_version;
    if (idle.geo_hash !== geoHash || idle.n_geo !== geoEntries.length || (geoEntries.length && idle.geo_version === 0)) {
      geoVersion = version;
      for (const key of [...this.maps.sl_geo.keys()]) if (decodeLpmKey(key).half === half) this.maps.sl_geo.delete(key);
      const val = Buffer.alloc(SL_GEO_VAL_SIZE);
      for (const g of geoEntries) {
        const key = encodeLpmKey({ prefixlen: 32 + g.plen, half, family: g.family, addr: g.addr }, Buffer.alloc(SL_LPM_KEY_SIZE));
        this.maps.sl_geo.update(key, encodeGeoVal({ version: geoVersion, tier: g.tier }, val));
      }
    }
    this.maps.sl_policy.update(u32key(half), encodeHalf({
      version,
      n_cidr: compiled.cidrs.length,
      any: { version, n: compiled.any.length, slot: compiled.any },
      n_geo: geoEntries.length,
      geo_version: geoVersion,
      geo_hash: geoHash,
    }));
    // The flip. Only the version changes, so the rest of config_map is rewritten byte for byte.
    this.maps.config_map.update(u32key(0), encodeConfig({ ...cur, version }, Buffer.alloc(SL_CONFIG_SIZE)));
    return compiled;
  }

  /**
   * Make sl_lists hold exactly these lists. Entries are added or changed before stale ones are
   * removed, so a prefix that stays listed is never missing (unless old and new together would
   * not fit the trie: then the stale ones go first); the lookup is switched on before the first
   * entry matters and off only once the trie is empty. Lists that cannot fit are a PolicyError
   * before anything is written.
   */
  applyLists(lists: Lists): number {
    // The same lists again (a change of limits or rules only, a reconcile) are not compiled again:
    // at 100,000 prefixes that is most of the work. The trie is still compared and repaired.
    const text = JSON.stringify([lists.mgmt, lists.deny, lists.allow]);
    const entries = this.#lists?.text === text ? this.#lists.entries : compileLists(lists);
    this.#lists = { text, entries };
    const trie = this.maps.sl_lists;
    const keyOf = (e: { family: number; plen: number; addr: Buffer }): Buffer =>
      encodeLpmKey({ prefixlen: 32 + e.plen, half: 0, family: e.family, addr: e.addr }, Buffer.alloc(SL_LPM_KEY_SIZE));
    const wanted = new Map(entries.map((e) => [keyOf(e).toString('hex'), e.flags]));
    if (wanted.size > trie.maxEntries) {
      throw new PolicyError([`the lists make ${wanted.size} trie entries, more than the ${trie.maxEntries} that sl_lists holds: merge adjacent prefixes or drop those inside listed ones; nothing was changed`]);
    }
    // What the trie holds, entry by entry. A lookup of an absent prefix answers with the longest
    // one that covers it, so "is this prefix there?" is asked of the trie's own keys only (a key
    // present is its own longest match).
    const current = new Map<string, number>();
    for (const key of [...trie.keys()]) {
      const v = trie.lookup(key);
      if (v) current.set(key.toString('hex'), decodeListVal(v).flags);
    }
    const stale = [...current.keys()].filter((hex) => !wanted.has(hex));
    const adding = [...wanted.keys()].filter((hex) => !current.has(hex)).length;
    // Old and new side by side must fit; when they do not, the stale entries go first (an address
    // that only a removed prefix and an added one cover is unlisted between the two writes).
    const staleFirst = current.size + adding > trie.maxEntries;
    if (staleFirst) for (const hex of stale) trie.delete(Buffer.from(hex, 'hex'));
    if (entries.length) this.setConfig({ has_lists: 1 });
    for (const [hex, flags] of wanted) {
      if (current.get(hex) !== flags) trie.update(Buffer.from(hex, 'hex'), encodeListVal({ flags }));
    }
    if (!entries.length) this.setConfig({ has_lists: 0 });
    if (!staleFirst) for (const hex of stale) trie.delete(Buffer.from(hex, 'hex'));
    return entries.length;
  }

  /** Counters of one slot of stats_map, summed over CPUs. */
  counters(index: number): Counters {
    const perCpu = this.maps.stats_map.lookupPerCpu(u32key(index));
    return perCpu.map((b) => decodeCounters(b.subarray(0, SL_COUNTERS_SIZE))).reduce(addCounters);
  }

  /** Counters of the global slot (lists, non-IP, malformed). */
  globalCounters(): Counters {
    return this.counters(this.maxRules);
  }

  /** Totals over every rule and the global slot. */
  totals(): Counters {
    let t = this.globalCounters();
    for (let i = 0; i < this.maxRules; i++) t = addCounters(t, this.counters(i));
    return t;
  }
}
