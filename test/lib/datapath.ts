/**
 * The data path under test: the test build of bpf/sluice.bpf.c (clock from a map), loaded through
 * the real binding and driven through the real control plane (Limiter), run with BPF_PROG_TEST_RUN.
 */
import { Program, TEST_OBJECT, type BpfMap, type Collection } from '../../src/ebpf';
import { limiterMapsOf, loadDataPath } from '../../src/limiter/datapath';
import { Limiter, STATE_MAP_NAMES } from '../../src/limiter/limiter';
import { encodeTestCtl, SL_AGG_STATE_SIZE, SL_COUNTERS_SIZE, SL_LEASE_SIZE, SL_RULE_CPU_SIZE, SL_TEST_CTL_SIZE } from '../../src/generated/types';

/** The paths (src/ebpf/paths.ts); TEST_OBJECT is $SLUICE_TEST_OBJECT when set: another build of the
 *  test object (e.g. a base commit's, to show a test failing there). */
export { BENCH_OBJECT, PROD_OBJECT, REPO, TEST_OBJECT } from '../../src/ebpf';

export const XDP_DROP = 1;
export const XDP_PASS = 2;

const zero = Buffer.alloc(4);

export interface LoadOptions {
  object?: string;
  maxEntries?: number;
  maxRules?: number;
  /** Entries of one half of sl_lists (the trie holds two). */
  maxListEntries?: number;
}

export class TestDatapath {
  readonly limiter: Limiter;
  readonly prog: Program;
  private readonly testMap: BpfMap | undefined;
  private readonly ctl = Buffer.alloc(SL_TEST_CTL_SIZE);
  private salt = 0;
  private casFail = 0;
  private now = 0n;

  private constructor(readonly coll: Collection, prog: Program) {
    try {
      this.limiter = new Limiter(limiterMapsOf(coll.maps));
    } catch (e) {
      coll.close();
      throw e;
    }
    this.prog = prog;
    this.testMap = coll.maps.get('sl_test');
  }

  /** The one loader of the data path (src/limiter/datapath.ts), with the test build by default. */
  static async load(o: LoadOptions = {}): Promise<TestDatapath> {
    const dp = await loadDataPath(o.object ?? TEST_OBJECT, { maxEntries: o.maxEntries, maxRules: o.maxRules, maxListEntries: o.maxListEntries });
    return new TestDatapath(dp.coll, dp.prog);
  }

  /** Set the data path's clock (test build). 0n: the kernel's clock. */
  setNow(ns: bigint): void {
    this.now = ns;
    encodeTestCtl({ now_ns: ns, salt_keys: this.salt, cas_fail: this.casFail }, this.ctl);
    // An older build's control block may be shorter: it gets the fields it has.
    this.testMap!.update(zero, this.ctl.subarray(0, this.testMap!.valueSize));
  }

  /** Salt every key with a per-CPU sequence: a new source on every run (test build). */
  setSalt(on: boolean): void {
    this.salt = on ? 1 : 0;
    this.setNow(this.now);
  }

  /** Make every compare-and-exchange on a key's state lose its race, as under contention (test build). */
  setCasFail(on: boolean): void {
    this.casFail = on ? 1 : 0;
    this.setNow(this.now);
  }

  async run(packet: Buffer, repeat = 1): Promise<'pass' | 'drop'> {
    const r = await this.prog.run(packet, { repeat });
    if (r.retval !== XDP_PASS && r.retval !== XDP_DROP) throw new Error(`unexpected XDP verdict ${r.retval}`);
    return r.retval === XDP_PASS ? 'pass' : 'drop';
  }

  /**
   * Forget every key's state and every per-CPU time-keeping state (aggregate limits, leases, the
   * new-state budget): tests move the clock freely, also backwards, which real time never does.
   */
  clearState(): void {
    for (const name of STATE_MAP_NAMES) {
      const m = this.coll.maps.get(name);
      if (m) for (const k of [...m.keys()]) m.delete(k);
    }
    const pen = this.coll.maps.get('sl_penalty');
    if (pen) for (const k of [...pen.keys()]) pen.delete(k);
    // The rules' aggregate and untracked-budget times and their leases, kept by each CPU after its
    // counters in stats_map (struct sl_rule_cpu): zeroed, the counters left as they are (tests
    // count deltas).
    const stats = this.limiter.maps.stats_map;
    const agg = { off: SL_COUNTERS_SIZE, len: SL_AGG_STATE_SIZE + SL_LEASE_SIZE };
    for (let i = 0; i < stats.maxEntries; i++) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(i);
      const cpus = stats.lookupPerCpu(key).map((v) => Buffer.from(v));
      // And the global slot's retry time of sl_penalty (the last field).
      const retry = { off: SL_RULE_CPU_SIZE - 8, len: 8 };
      const used = (v: Buffer, r: { off: number; len: number }): boolean => v.subarray(r.off, r.off + r.len).some((x) => x !== 0);
      if (!cpus.some((v) => used(v, agg) || used(v, retry))) continue;
      for (const v of cpus) v.fill(0, agg.off, agg.off + agg.len).fill(0, retry.off, retry.off + retry.len);
      stats.update(key, cpus);
    }
    const ns = this.coll.maps.get('sl_newstate');
    if (ns) {
      const zeroes = Buffer.alloc(ns.valueBufferSize);
      for (let i = 0; i < ns.maxEntries; i++) {
        const key = Buffer.alloc(4);
        key.writeUInt32LE(i);
        ns.update(key, zeroes);
      }
    }
  }

  close(): void {
    LOADED.push(...[...this.coll.programs.values()].map((p) => p.info().id));
    this.coll.close();
  }
}

/** Ids of every program a TestDatapath loaded in this process. */
const LOADED: number[] = [];

/**
 * BPF objects cannot carry the run id in their names (they come from the ELF file), so leftovers
 * are checked by id: every program this process loaded must be gone once closed (the kernel frees
 * it after an RCU grace period, hence the short wait).
 */
export async function assertProgramsUnloaded(): Promise<void> {
  const deadline = Date.now() + 3000;
  let alive: number[] = [];
  do {
    alive = LOADED.filter((id) => {
      try {
        Program.fromId(id).close();
        return true;
      } catch {
        return false;
      }
    });
    if (!alive.length) return;
    await new Promise((r) => setTimeout(r, 50));
  } while (Date.now() < deadline);
  throw new Error(`programs still loaded after close: ${alive.join(', ')}`);
}
