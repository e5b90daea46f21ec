/**
 * The data path as the benchmarks load it: an object loaded by the one loader of the control plane
 * (src/limiter/datapath.ts, as the agent and the tests load it), driven through the Limiter, run
 * with BPF_PROG_TEST_RUN. Unlike the tests a benchmark sets any constant (coarse_clock) and size
 * (sl_cidr, max_rules), loads another commit's objects with that commit's Limiter, and sets the
 * test build's key salt modulo N.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BENCH_OBJECT, BPF_DIR, ObjectSpec, PROD_OBJECT, TEST_OBJECT, type BpfMap, type Collection, type Program } from '../../src/ebpf';
import { encodeTestCtl, SL_TEST_CTL_SIZE } from '../../src/generated/types';
import { loadDataPath } from '../../src/limiter/datapath';
import { Limiter, LIMITER_MAP_NAMES, STATE_MAP_NAMES, type LimiterMaps } from '../../src/limiter/limiter';

export { BENCH_OBJECT, PROD_OBJECT, TEST_OBJECT };

export interface BenchLoad {
  object?: string;
  constants?: Record<string, number>;
  maxEntries?: number;
  maxRules?: number;
  /** Entries of the source-prefix trie (both policy halves). */
  cidrEntries?: number;
  /** Entries of one half of sl_lists. */
  maxListEntries?: number;
  /**
   * The Limiter class that writes this object's maps: another commit's (its compiled control plane,
   * see scripts/baseline.sh) when that commit's map layouts differ from this one's.
   */
  limiter?: LimiterClass;
  /** The maps that Limiter needs (another commit's may differ from this one's LIMITER_MAP_NAMES). */
  mapNames?: readonly string[];
}

/** What a benchmark asks of a Limiter (this commit's, or the one of the objects' own commit). */
export type BenchLimiter = Pick<Limiter, 'applyPolicy' | 'setConfig' | 'maps' | 'counters' | 'globalCounters' | 'totals'>;
export type LimiterClass = new (maps: LimiterMaps) => BenchLimiter;

/**
 * The Limiter of a directory made by scripts/baseline.sh (objects plus that commit's dist/), or
 * undefined when the directory holds objects only (their maps must then be this commit's).
 */
export function limiterOf(dir: string): LimiterClass | undefined {
  return limiterModuleOf(dir)?.Limiter;
}

/** The names of the maps the Limiter of such a directory needs (undefined: objects only). */
export function limiterMapNamesOf(dir: string): readonly string[] | undefined {
  return limiterModuleOf(dir)?.LIMITER_MAP_NAMES;
}

function limiterModuleOf(dir: string): { Limiter: LimiterClass; LIMITER_MAP_NAMES: readonly string[] } | undefined {
  const js = join(dir, 'dist', 'src', 'limiter', 'limiter.js');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return existsSync(js) ? (require(js) as { Limiter: LimiterClass; LIMITER_MAP_NAMES: readonly string[] }) : undefined;
}

export class BenchDatapath {
  readonly limiter: BenchLimiter;
  readonly prog: Program;

  private constructor(readonly coll: Collection, limiter: LimiterClass = Limiter, names: readonly string[] = LIMITER_MAP_NAMES) {
    // Another commit's Limiter takes that commit's maps (`names`, checked at load), not this one's.
    const maps: Partial<LimiterMaps> & Record<string, BpfMap> = {};
    for (const name of names) maps[name] = coll.map(name);
    this.limiter = new limiter(maps as LimiterMaps);
    this.prog = coll.program('sluice_xdp');
  }

  /**
   * Objects of another commit may have other maps beyond the limiter's (the base commit's have no
   * sl_abi_map): the limiter's maps are required, the rule-sized ones are sized only if present.
   */
  static async load(o: BenchLoad = {}): Promise<BenchDatapath> {
    const names = o.mapNames ?? LIMITER_MAP_NAMES;
    const dp = await loadDataPath(o.object ?? PROD_OBJECT, {
      require: names, maxEntries: o.maxEntries, maxRules: o.maxRules, cidrEntries: o.cidrEntries,
      maxListEntries: o.maxListEntries, constants: o.constants,
    });
    try {
      return new BenchDatapath(dp.coll, o.limiter, names);
    } catch (e) {
      dp.close();
      throw e;
    }
  }

  /** Test build: the clock (0n: the kernel's) and a new key per run, cycling over `mod` keys per
   *  CPU when mod > 0 (salt off when undefined). */
  setTest(o: { nowNs?: bigint; salt?: boolean; mod?: number }): void {
    const m = this.coll.map('sl_test');
    const ctl = encodeTestCtl({ now_ns: o.nowNs ?? 0n, salt_keys: o.salt ? 1 : 0, salt_mod: o.mod ?? 0 }, Buffer.alloc(SL_TEST_CTL_SIZE));
    m.update(Buffer.alloc(4), ctl.subarray(0, m.valueSize)); // another commit's may be shorter
  }

  /** Entries in the state maps (walks the keys). */
  entries(): number {
    let n = 0;
    for (const name of STATE_MAP_NAMES) {
      const m = this.coll.maps.get(name);
      if (m) for (const chunk of m.lookupBatch()) n += chunk.length;
    }
    return n;
  }

  close(): void {
    this.coll.close();
  }
}

/** sluice.bpf.o and sluice_test.bpf.o of one build, copied where a rebuild cannot reach them. */
export interface ObjectSet {
  /** The directory they were copied from. */
  from: string;
  prod: string;
  test: string;
  sha256: { prod: string; test: string };
  /** Names of the maps (not the internal ones) of each object. */
  maps: { prod: string[]; test: string[] };
  /** Removes the copies. */
  cleanup(): void;
}

/**
 * Copy a build's two objects (default: bpf/) to a temporary directory, so that a rebuild while a
 * benchmark loads its many cases cannot give it objects of two builds.
 */
export function snapshotObjects(from = BPF_DIR): ObjectSet {
  const srcs = { prod: join(from, 'sluice.bpf.o'), test: join(from, 'sluice_test.bpf.o') };
  for (const p of Object.values(srcs)) if (!existsSync(p)) throw new Error(`${p} does not exist (a directory of objects holds sluice.bpf.o and sluice_test.bpf.o)`);
  const dir = mkdtempSync(join(tmpdir(), 'sluice-objects-'));
  try {
    const prod = join(dir, 'sluice.bpf.o');
    const test = join(dir, 'sluice_test.bpf.o');
    copyFileSync(srcs.prod, prod);
    copyFileSync(srcs.test, test);
    const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
    const mapsOf = (p: string): string[] => {
      const spec = ObjectSpec.open(p);
      try {
        return spec.maps.filter((m) => !m.internal).map((m) => m.name);
      } finally {
        spec.close();
      }
    };
    return {
      from, prod, test,
      sha256: { prod: sha(prod), test: sha(test) },
      maps: { prod: mapsOf(prod), test: mapsOf(test) },
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
    };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** bench.bpf.o with its floor's map holding `src` (an IPv4 address), so the floor's lookup hits. */
export async function loadBaselines(src: number[]): Promise<{ pass: Program; floor: Program; floorCoarse: Program; close(): void }> {
  const coll = await ObjectSpec.open(BENCH_OBJECT).load();
  // The frozen key of bpf/bench/sluice.h (issue 13's base): rule_id u16, family u8, plen u8, pad u32,
  // addr[16]; its value, the frozen 48-byte state.
  const key = Buffer.alloc(24);
  key.writeUInt8(4, 2);
  Buffer.from(src).copy(key, 8);
  const floor = coll.map('floor_map');
  floor.update(key, Buffer.alloc(floor.valueSize));
  return { pass: coll.program('bench_pass'), floor: coll.program('bench_floor'), floorCoarse: coll.program('bench_floor_coarse'), close: () => coll.close() };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[n >> 1]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
};

/**
 * Interleaved rounds of test runs on one CPU: each case runs `repeat` times per round; the median
 * per case, and its spread. Timing here is noisy, so cases are compared within one call.
 */
/**
 * Which figure of a case's rounds stands for it: the median, or the least (on a shared machine
 * every disturbance only adds time to a round, so the least of many short rounds is the closest to
 * what the code itself costs; say which one a table shows).
 */
export type RoundStat = 'median' | 'least';

export async function interleaved(cases: { name: string; prog: Program; frame: Buffer; before?: () => void }[], o: { rounds: number; repeat: number; cpu?: number; stat?: RoundStat }): Promise<Map<string, { ns: number; spread: [number, number] }>> {
  const samples = new Map<string, number[]>();
  for (let round = 0; round < o.rounds; round++) {
    for (const c of cases) {
      c.before?.();
      const r = await c.prog.runOnCpu(o.cpu ?? 0, c.frame, { repeat: o.repeat });
      samples.set(c.name, [...(samples.get(c.name) ?? []), r.durationNs]);
    }
  }
  return new Map([...samples].map(([k, v]) => [k, { ns: o.stat === 'least' ? Math.min(...v) : median(v), spread: [Math.min(...v), Math.max(...v)] as [number, number] }]));
}
