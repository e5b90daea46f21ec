/**
 * The limiter as the control plane sees it: the data path's maps, written through the binding.
 * Applies policies atomically (write the inactive half, wait out readers, flip one version number),
 * reads counters and settings. Knows nothing about interfaces or pins (that is src/agent).
 */
import { BpfError, NotSupportedError, type BpfMap } from '../ebpf';
import {
  decodeCands, decodeConfig, decodeCounters, decodeHalf, decodeListVal, decodeLpmKey, decodePenalty, decodeRule, encodeCands, encodeConfig,
  encodeGeoVal, encodeHalf, encodeListVal, encodeLpmKey, encodeRule, RuleFlags, type Config, type Counters, type Rule,
  SL_GEO_VAL_SIZE,
  SL_CONFIG_SIZE, SL_COUNTERS_SIZE, SL_LPM_KEY_SIZE, SL_RULE_SIZE,
  type MapName,
} from '../generated/types';
import { LimiterCode } from './errors';
import { compiledListsSteps, type ListEntry, type Lists } from './lists';
import { compilePolicy, type CompiledPolicy, type PolicySpec } from './policy';
import { scaleOf } from './models';
import { runAsync, runSync, SLICE_MS, ticker, type Steps } from './steps';

/** The maps of one loaded (or adopted) data path, by their names in bpf/maps.h. */
export interface LimiterMaps {
  config_map: BpfMap;
  stats_map: BpfMap;
  /** Per-client state: IPv4 sources and per-rule buckets (8-byte keys). */
  rate_limit_map: BpfMap;
  /** Per-client state: IPv6 sources (20-byte keys). */
  rate_limit_map6: BpfMap;
  sl_rules: BpfMap;
  sl_policy: BpfMap;
  sl_cidr: BpfMap;
  sl_lists: BpfMap;
  sl_rcu: BpfMap;
  sl_rcu_inner: BpfMap;
  sl_geo: BpfMap;
}

/** Every one a map of the object (src/generated/types.ts, Maps), or this fails to compile. */
export const LIMITER_MAP_NAMES: (keyof LimiterMaps & MapName)[] = [
  'config_map', 'stats_map', 'rate_limit_map', 'rate_limit_map6', 'sl_rules', 'sl_policy', 'sl_cidr', 'sl_lists', 'sl_rcu', 'sl_rcu_inner', 'sl_geo',
];

/** Maps sized by the number of rule slots: name -> entries for max_rules slots. */
export const RULE_SIZED_MAPS: Record<string, (maxRules: number) => number> = {
  sl_rules: (n) => 2 * n,
  stats_map: (n) => n + 1,
};

/** The per-client state maps, both sized to the configured number of entries (max_entries). */
export const STATE_MAP_NAMES = ['rate_limit_map', 'rate_limit_map6'] as const;

/** What one transaction changes (Limiter.apply); what it leaves out stays as the live half has it. */
export interface Change {
  policy?: PolicySpec;
  /** With policy: the GeoIP dataset of the new half (null or absent: none). */
  geo?: { entries: GeoEntry[]; hash: bigint } | null;
  lists?: Lists;
  malformedDrop?: boolean;
}

/** Lists that compile to more trie entries than one half of sl_lists holds. */
export class ListsTooLargeError extends Error {
  readonly code = LimiterCode.ListsTooLarge;
  constructor(readonly entries: number, readonly capacity: number) {
    super(`the lists compile to ${entries} entries, and this data path holds ${capacity} per policy half: ` +
      `raise max_list_entries (config) or --max-list-entries (sluice up; takes a restart of the protection with --reset-state), or shorten the lists. Nothing was changed`);
    this.name = 'ListsTooLargeError';
  }
}

/** Source prefix -> GeoIP tier (1..255), as compiled by src/limiter/geoip.ts. */
export interface GeoEntry {
  family: 4 | 6;
  plen: number;
  addr: Buffer;
  tier: number;
}

/** Entries per batch syscall when a trie half is read or written (BPF_MAP_*_BATCH). */
export const TRIE_BATCH = 2048;

/**
 * The id of a key of a trie of struct sl_lpm_key: the key without its half (byte 4), as a latin1
 * string, so the same prefix in either half. Strings, and values as strings too, rather than a Buffer per entry: a
 * change of 100,000 entries then leaves the garbage collector little to walk (its pauses are
 * pauses of the event loop as well).
 */
const HALF_OFFSET = 4;
/** The id of the key encodeLpmKey gives for this prefix (prefixlen 32 + plen, little-endian; no padding). */
const idOfPrefix = (e: { family: number; plen: number; addr: Buffer }): string => {
  const a = e.addr.toString('latin1', 0, 16);
  return String.fromCharCode(32 + e.plen, 0, 0, 0, e.family, 0, 0) + (a.length < 16 ? a + '\0'.repeat(16 - a.length) : a);
};
/** Write the key of an id, in half `half`, at off. */
const putKey = (b: Buffer, off: number, id: string, half: number): void => {
  b.write(id.slice(0, HALF_OFFSET), off, 'latin1');
  b[off + HALF_OFFSET] = half;
  b.write(id.slice(HALF_OFFSET), off + HALF_OFFSET + 1, 'latin1');
};
const keyOfId = (id: string, half: number): Buffer => {
  const k = Buffer.alloc(SL_LPM_KEY_SIZE);
  putKey(k, 0, id, half);
  return k;
};

/** A kernel that does not do batch operations on this map type (an LPM trie before they were added). */
const batchUnsupported = (e: unknown): boolean => e instanceof NotSupportedError || (e instanceof BpfError && (e.errnoName === 'EINVAL' || e.errnoName === 'ENOTSUPP' || e.errnoName === 'EOPNOTSUPP'));

const u32key = (i: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(i);
  return b;
};

/**
 * Delete the entries of sl_penalty (blocked and over-limit keys, see bpf/sluice.h) that no longer
 * say anything: their `until` has passed on the data path's clock (CLOCK_MONOTONIC). The data
 * path deletes those it looks up; this catches the keys that never come back, so that the store
 * (a plain hash that never evicts) keeps room for new blocks. Returns the entries deleted.
 */
export function sweepPenalties(map: BpfMap, nowNs: bigint = process.hrtime.bigint()): number {
  // Read in batches (a syscall per 4,096 entries), delete what expired.
  const expired: Buffer[] = [];
  for (const chunk of map.lookupBatch({ batchSize: 4096 })) {
    for (const [k, v] of chunk) if (decodePenalty(v).until <= nowNs) expired.push(Buffer.from(k));
  }
  let n = 0;
  for (const k of expired) if (map.delete(k)) n++;
  return n;
}

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
  #lists: { text: string; entries: readonly ListEntry[] } | undefined;
  /** An applyAsync is between two of its slices: no other change may start on these maps. */
  #applying = false;
  /** Batch writes of the tries (BPF_MAP_UPDATE_BATCH, _DELETE_BATCH); a kernel without them: one by one. */
  #batchWrites = true;

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
   * written; the data path sees the old policy until the one write that flips the version. The
   * lists and the malformed verdict stay as they are.
   */
  applyPolicy(spec: PolicySpec, geo?: { entries: GeoEntry[]; hash: bigint }): CompiledPolicy {
    return this.apply({ policy: spec, geo: geo ?? null }).compiled!;
  }

  /** Make the lists exactly these, in one flip (the rules stay as they are). Returns the trie's entries. */
  applyLists(lists: Lists): number {
    return this.apply({ lists }).listEntries;
  }

  /** Drop (or pass) malformed frames, in one flip; none when that is already the live verdict. */
  setMalformedDrop(drop: boolean): void {
    const live = decodeHalf(this.maps.sl_policy.lookup(u32key(this.version() & 1))!);
    if (!!live.malformed_drop !== drop) this.apply({ malformedDrop: drop });
  }

  /** Entries of one list half: sl_lists holds two halves. */
  listCapacity(): number {
    return Math.floor(this.maps.sl_lists.maxEntries / 2);
  }

  /**
   * One change, as one transaction: rules, CIDRs, GeoIP entries, lists and the malformed verdict
   * are all written into the idle half, and one write of the version makes all of them live at
   * once, so a packet sees either the old half or the new one, never a mix. What the change does
   * not name is carried over from the live half. Everything is checked (the policy compiled, the
   * lists sized) before the first write; a refusal changes nothing.
   */
  apply(change: Change): { compiled?: CompiledPolicy; listEntries: number } {
    this.#assertIdle();
    return runSync(this.#apply(change));
  }

  /**
   * apply, in time slices of about sliceMs with a turn of the event loop between them, for a
   * process that serves meanwhile (the daemon): a list or GeoIP dataset of 100,000 entries is
   * compiled and written in batches (TRIE_BATCH entries a syscall) without holding the loop for
   * the whole of it. The transaction is the same: the idle half is written whole, then one write
   * flips; until the flip no packet sees any of it, and a crash in between leaves the old policy.
   * One change at a time per Limiter: another apply while this one runs is refused.
   */
  async applyAsync(change: Change, sliceMs = SLICE_MS): Promise<{ compiled?: CompiledPolicy; listEntries: number }> {
    this.#assertIdle();
    this.#applying = true;
    try {
      return await runAsync(this.#apply(change), sliceMs);
    } finally {
      this.#applying = false;
    }
  }

  #assertIdle(): void {
    if (this.#applying) throw new Error('a change of this data path is being applied (Limiter.applyAsync): one change at a time');
  }

  *#apply(change: Change): Steps<{ compiled?: CompiledPolicy; listEntries: number }> {
    const compiled = change.policy ? compilePolicy(change.policy, this.maxRules) : undefined;
    const lists = change.lists ? yield* this.compiledLists(change.lists) : undefined;
    if (lists && lists.length > this.listCapacity()) throw new ListsTooLargeError(lists.length, this.listCapacity());

    const cur = this.config();
    const version = (cur.version + 1) >>> 0;
    const half = version & 1;
    const liveHalf = cur.version & 1;
    const live = decodeHalf(this.maps.sl_policy.lookup(u32key(liveHalf))!);
    const idle = decodeHalf(this.maps.sl_policy.lookup(u32key(half))!);
    // Before the first write: no packet may still read the idle half (it was live two flips ago).
    this.waitForReaders();
    yield;

    // Rules and candidates.
    const liveRules = new Map<number, Rule>();
    const liveSlots: Rule[] = this.rulesOf(liveHalf);
    for (const r of liveSlots) if (r.version === cur.version) liveRules.set(r.id, r);
    let nCidr: number;
    let any: number[];
    if (compiled) {
      // Epochs: a rule keeps its keys' state unless what its words mean changed (its algorithm, its
      // window, the quanta of a token/gcra dimension, whether it has a packet limit: models.ts,
      // scaleOf). A new epoch is the new version number, which no state can carry yet.
      compiled.rules.forEach((r, slot) => {
        const prev = liveRules.get(r.id);
        const epoch = prev && scaleOf(prev) === scaleOf(r) ? prev.epoch : version;
        this.maps.sl_rules.update(u32key(half * this.maxRules + slot), encodeRule({ ...r, version, epoch }, Buffer.alloc(SL_RULE_SIZE)));
      });
      for (const key of [...this.maps.sl_cidr.keys()]) if (decodeLpmKey(key).half === half) this.maps.sl_cidr.delete(key);
      for (const c of compiled.cidrs) {
        const key = encodeLpmKey({ prefixlen: 32 + c.plen, half, family: c.family, addr: c.addr }, Buffer.alloc(SL_LPM_KEY_SIZE));
        this.maps.sl_cidr.update(key, encodeCands({ version, n: c.slots.length, slot: c.slots }));
      }
      nCidr = compiled.cidrs.length;
      any = compiled.any;
    } else {
      // The live rules, as they are, under the new version (epochs kept: their state stays valid).
      liveSlots.forEach((r, slot) => {
        if (r.version === cur.version) this.maps.sl_rules.update(u32key(half * this.maxRules + slot), encodeRule({ ...r, version }, Buffer.alloc(SL_RULE_SIZE)));
      });
      const keep: [Buffer, Buffer][] = [];
      for (const key of [...this.maps.sl_cidr.keys()]) {
        const h = decodeLpmKey(key).half;
        if (h === half) this.maps.sl_cidr.delete(key);
        else if (h === liveHalf) keep.push([key, this.maps.sl_cidr.lookup(key)!]);
      }
      for (const [key, val] of keep) {
        const k = Buffer.from(key);
        k.writeUInt8(half, 4); // sl_lpm_key.half
        const c = decodeCands(val);
        this.maps.sl_cidr.update(k, encodeCands({ ...c, version }));
      }
      nCidr = live.n_cidr;
      any = live.any.slot.slice(0, live.any.n);
    }

    yield;
    // GeoIP: rewritten only when this half does not already hold the dataset (a dataset is large;
    // most changes do not touch it).
    const geo = compiled ? change.geo ?? null : undefined;
    let geoHash: bigint;
    let nGeo: number;
    let geoVersion = idle.geo_version;
    if (geo !== undefined) {
      geoHash = geo?.hash ?? 0n;
      nGeo = geo?.entries.length ?? 0;
      if (idle.geo_hash !== geoHash || idle.n_geo !== nGeo || (nGeo && idle.geo_version === 0)) {
        geoVersion = version;
        this.markGeoUnknown(half, idle);
        const entries = new Map<string, string>();
        const tick = ticker(TRIE_BATCH);
        const byTier = new Map<number, string>();
        for (const g of geo?.entries ?? []) {
          let v = byTier.get(g.tier);
          if (v === undefined) byTier.set(g.tier, (v = encodeGeoVal({ version: geoVersion, tier: g.tier }, Buffer.alloc(SL_GEO_VAL_SIZE)).toString('latin1')));
          entries.set(idOfPrefix(g), v);
          if (tick()) yield;
        }
        yield* this.syncHalf(this.maps.sl_geo, half, () => entries);
      }
    } else {
      geoHash = live.geo_hash;
      nGeo = live.n_geo;
      if (idle.geo_hash !== live.geo_hash || idle.n_geo !== live.n_geo || idle.geo_version !== live.geo_version) {
        geoVersion = live.geo_version;
        this.markGeoUnknown(half, idle);
        yield* this.syncHalf(this.maps.sl_geo, half, (halves) => halves[liveHalf]!);
      }
    }

    // Lists: the idle half is brought to the wanted entries by difference (it usually holds what
    // was live a flip ago, so a `deny add` writes one entry, not the whole list).
    let nLists: number;
    if (lists) {
      const want = new Map<string, string>();
      const tick = ticker(TRIE_BATCH);
      const byFlags = new Map<number, string>();
      for (const e of lists) {
        let v = byFlags.get(e.flags);
        if (v === undefined) byFlags.set(e.flags, (v = encodeListVal({ flags: e.flags }).toString('latin1')));
        want.set(idOfPrefix(e), v);
        if (tick()) yield;
      }
      yield* this.syncHalf(this.maps.sl_lists, half, () => want);
      nLists = lists.length;
    } else {
      yield* this.syncHalf(this.maps.sl_lists, half, (halves) => halves[liveHalf]!);
      nLists = live.n_lists;
    }

    // The default rule alone in this half (no other rule reachable: none without a source
    // condition and no source-CIDR entry; no list or GeoIP entry): the data path reads its slot
    // without the half's header (bpf/sluice.h, SL_RF_ALONE). Written before the flip, like the rest.
    const alone = nCidr === 0 && any.length === 0 && nGeo === 0 && nLists === 0;
    const slot0 = this.maps.sl_rules.lookup(u32key(half * this.maxRules));
    if (slot0) {
      const r0 = decodeRule(slot0);
      const flags = alone ? (r0.flags | RuleFlags.ALONE) >>> 0 : (r0.flags & ~RuleFlags.ALONE) >>> 0;
      if (flags !== r0.flags) this.maps.sl_rules.update(u32key(half * this.maxRules), encodeRule({ ...r0, flags }, Buffer.alloc(SL_RULE_SIZE)));
    }
    this.maps.sl_policy.update(u32key(half), encodeHalf({
      version,
      n_cidr: nCidr,
      any: { version, n: any.length, slot: any },
      n_geo: nGeo,
      geo_version: geoVersion,
      geo_hash: geoHash,
      n_lists: nLists,
      malformed_drop: change.malformedDrop === undefined ? live.malformed_drop : change.malformedDrop ? 1 : 0,
    }));
    // The flip. Only the version changes, so the rest of config_map is rewritten byte for byte.
    this.maps.config_map.update(u32key(0), encodeConfig({ ...cur, version }, Buffer.alloc(SL_CONFIG_SIZE)));
    return { compiled, listEntries: nLists };
  }

  /**
   * The same lists again (a change of limits or rules only, a reconcile) are not compiled again:
   * at 100,000 prefixes that is most of the work.
   */
  private *compiledLists(lists: Lists): Steps<readonly ListEntry[]> {
    const text = JSON.stringify([lists.mgmt, lists.deny, lists.allow]);
    const entries = this.#lists?.text === text ? this.#lists.entries : yield* compiledListsSteps(lists);
    this.#lists = { text, entries };
    return entries;
  }

  /**
   * Before the GeoIP entries of the idle half are rewritten: its record stops claiming them, so
   * that a crash in the middle (a half-written dataset) makes the next change rewrite them rather
   * than trust them. No packet reads the idle half (waitForReaders ran).
   */
  private markGeoUnknown(half: number, idle: ReturnType<typeof decodeHalf>): void {
    this.maps.sl_policy.update(u32key(half), encodeHalf({ ...idle, n_geo: 0xffffffff, geo_version: 0, geo_hash: 0n }));
  }

  /** The lists of the live half, as the trie holds them (effective flags). */
  liveListEntries(): { family: number; plen: number; addr: Buffer; flags: number }[] {
    return this.entriesOf(this.maps.sl_lists, this.version() & 1).map(([e, v]) => ({ ...e, flags: decodeListVal(v).flags }));
  }



  /** The entries of one half of an LPM trie of struct sl_lpm_key, with their values. */
  private entriesOf(trie: BpfMap, half: number): [{ family: number; plen: number; addr: Buffer }, Buffer][] {
    const out: [{ family: number; plen: number; addr: Buffer }, Buffer][] = [];
    const halves = runSync(this.readHalves(trie));
    for (const [id, v] of halves[half]!) {
      const k = decodeLpmKey(keyOfId(id, half));
      out.push([{ family: k.family, plen: k.prefixlen - 32, addr: Buffer.from(k.addr) }, Buffer.from(v, 'latin1')]);
    }
    return out;
  }

  /**
   * Both halves of a trie of struct sl_lpm_key (prefix without its half -> value), read with
   * batch lookups of TRIE_BATCH entries, a possible pause after each.
   */
  private *readHalves(trie: BpfMap): Steps<Map<string, string>[]> {
    const halves = [new Map<string, string>(), new Map<string, string>()];
    const ks = trie.keySize;
    const vs = trie.valueBufferSize;
    for (const b of trie.batches({ batchSize: TRIE_BATCH, reuse: true })) {
      for (let i = 0, k = 0, v = 0; i < b.count; i++, k += ks, v += vs) {
        const id = b.keys.toString('latin1', k, k + HALF_OFFSET) + b.keys.toString('latin1', k + HALF_OFFSET + 1, k + ks);
        halves[b.keys[k + HALF_OFFSET]! & 1]!.set(id, b.values.toString('latin1', v, v + vs));
      }
      yield;
    }
    return halves;
  }

  /**
   * Make one half of a trie hold exactly the entries `wanted` gives (computed from both halves as
   * they are read), by difference: what is missing or differs is written, what is extra deleted.
   * In batches of TRIE_BATCH entries a syscall, a possible pause after each. Deletes first, so that
   * the half never holds more than the larger of before and after (the trie's size is two halves).
   */
  private *syncHalf(trie: BpfMap, half: number, wanted: (halves: Map<string, string>[]) => Map<string, string>): Steps<void> {
    const halves = yield* this.readHalves(trie);
    const want = wanted(halves);
    const have = halves[half]!;
    const del: string[] = [];
    const put: string[] = [];
    let n = 0;
    for (const id of have.keys()) {
      if (!want.has(id)) del.push(id);
      if (++n % TRIE_BATCH === 0) yield;
    }
    for (const [id, v] of want) {
      if (have.get(id) !== v) put.push(id);
      if (++n % TRIE_BATCH === 0) yield;
    }
    const ks = trie.keySize;
    const vs = trie.valueBufferSize;
    /** Chunk i of ids as packed keys (and their values from want). */
    const packed = (ids: string[], values: boolean): { count: number; keys: Buffer; values: Buffer } => {
      const keys = Buffer.alloc(ids.length * ks);
      const vals = Buffer.alloc(values ? ids.length * vs : 0);
      ids.forEach((id, j) => {
        putKey(keys, j * ks, id, half);
        if (values) vals.write(want.get(id)!, j * vs, 'latin1');
      });
      return { count: ids.length, keys, values: vals };
    };
    for (let i = 0; i < del.length; i += TRIE_BATCH) {
      const b = packed(del.slice(i, i + TRIE_BATCH), false);
      const keys = Array.from({ length: b.count }, (_, j) => b.keys.subarray(j * ks, (j + 1) * ks));
      if (this.#batchWrites) {
        try {
          trie.deleteBatch(keys);
        } catch (e) {
          if (!batchUnsupported(e)) throw e;
          this.#batchWrites = false;
        }
      }
      if (!this.#batchWrites) for (const k of keys) trie.delete(k);
      yield;
    }
    for (let i = 0; i < put.length; i += TRIE_BATCH) {
      const b = packed(put.slice(i, i + TRIE_BATCH), true);
      if (this.#batchWrites) {
        try {
          trie.updatePacked(b);
        } catch (e) {
          if (!batchUnsupported(e)) throw e;
          this.#batchWrites = false;
        }
      }
      if (!this.#batchWrites) for (let j = 0; j < b.count; j++) trie.update(b.keys.subarray(j * ks, (j + 1) * ks), b.values.subarray(j * vs, (j + 1) * vs));
      yield;
    }
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
