/**
 * Scale: per-packet cost (BPF_PROG_TEST_RUN) and throughput (the lab) as tracked sources grow
 * 1 -> 10,000 -> 1,000,000 and as source-CIDR entries grow 1 -> 100,000; the kernel's own account
 * of the state map's memory (fdinfo memlock) per 100,000 entries.
 */
import type { BpfMap } from '../../src/ebpf';
import type { RuleSpec } from '../../src/limiter/policy';
import { STATE_MAP_NAMES } from '../../src/limiter/limiter';
import { FRAME } from '../decision';
import { BenchDatapath, interleaved, TEST_OBJECT } from './datapath';
import type { Decisions } from './peers';
import { Link } from '../../src/ebpf';
import { RX_CPU, type ConfigDef, type Shape, type Site } from './throughput';

/** Enough room for a million sources without the LRU evicting any. */
export const BIG_MAP = 1 << 21;
const HUGE = { pps: 1n << 30n, ppsBurst: 1n << 30n };

export interface ScaleRow {
  what: 'sources' | 'cidr';
  n: number;
  ns_per_packet: number;
  ratio_to_first: number;
  spread_ns: [number, number];
  entries?: number;
  apply_ms?: number;
}

/** Per-packet cost over N tracked sources: the test build cycles each CPU over N salted keys. */
export async function sourcesPerPacket(ns: number[], o: { repeat: number; rounds: number }): Promise<ScaleRow[]> {
  const dps: { n: number; dp: BenchDatapath }[] = [];
  try {
    for (const n of ns) {
      const dp = await BenchDatapath.load({ object: TEST_OBJECT, maxEntries: BIG_MAP });
      dps.push({ n, dp });
      dp.limiter.applyPolicy({ rules: [{ id: 0, alg: 'token', ...HUGE }] });
      dp.limiter.setConfig({ new_states_per_sec: 0xffffffff }); // track every one of them
      dp.setTest({ salt: true, mod: n });
      await dp.prog.runOnCpu(RX_CPU, FRAME, { repeat: n }); // every key created once
    }
    const res = await interleaved(dps.map(({ n, dp }) => ({ name: String(n), prog: dp.prog, frame: FRAME })), { ...o, cpu: RX_CPU });
    const first = res.get(String(ns[0]))!.ns;
    return dps.map(({ n, dp }) => {
      const r = res.get(String(n))!;
      return { what: 'sources', n, ns_per_packet: r.ns, ratio_to_first: +(r.ns / first).toFixed(2), spread_ns: r.spread, entries: dp.entries() };
    });
  } finally {
    for (const { dp } of dps) dp.close();
  }
}

/**
 * N source-prefix entries, spread over min(N, 1000) rules: N - 1 distinct /24s from 20.0.0.0 up,
 * and `own` (by default the test frame's 192.0.2.0/24) in the last rule, so that classification
 * walks the trie to a hit.
 */
export function cidrPolicy(n: number, own = '192.0.2.0/24'): RuleSpec[] {
  const nRules = Math.min(n, 1000);
  const prefixes: string[][] = Array.from({ length: nRules }, () => []);
  for (let k = 0; k < n - 1; k++) prefixes[k % nRules]!.push(`${20 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}.0/24`);
  prefixes[nRules - 1]!.push(own);
  return [{ id: 0, alg: 'token', ...HUGE }, ...prefixes.map((src, i) => ({ id: i + 1, src, alg: 'token' as const, ...HUGE }))];
}

export async function cidrPerPacket(ns: number[], o: { repeat: number; rounds: number }): Promise<ScaleRow[]> {
  const dps: { n: number; dp: BenchDatapath; applyMs: number }[] = [];
  try {
    for (const n of ns) {
      const dp = await BenchDatapath.load({ maxRules: 1024 + 1, cidrEntries: 1 << 18 });
      const rules = cidrPolicy(n);
      const t0 = process.hrtime.bigint();
      dp.limiter.applyPolicy({ rules });
      dps.push({ n, dp, applyMs: Number(process.hrtime.bigint() - t0) / 1e6 });
    }
    const res = await interleaved(dps.map(({ n, dp }) => ({ name: String(n), prog: dp.prog, frame: FRAME })), { ...o, cpu: RX_CPU });
    const first = res.get(String(ns[0]))!.ns;
    return dps.map(({ n, applyMs }) => {
      const r = res.get(String(n))!;
      return { what: 'cidr', n, ns_per_packet: r.ns, ratio_to_first: +(r.ns / first).toFixed(2), spread_ns: r.spread, apply_ms: +applyMs.toFixed(1) };
    });
  } finally {
    for (const { dp } of dps) dp.close();
  }
}

/**
 * The kernel's account of the state maps' memory at a few sizes (an LRU hash preallocates):
 * rate_limit_map (IPv4 keys and per-rule buckets) and rate_limit_map6 (IPv6 keys), each of
 * max_entries.
 */
export async function stateMemory(sizes: number[]): Promise<{ map: string; key_bytes: number; value_bytes: number; max_entries: number; bytes: number; bytes_per_100k: number; mb_per_100k: number }[]> {
  const out = [];
  for (const n of sizes) {
    const dp = await BenchDatapath.load({ maxEntries: n });
    try {
      for (const name of STATE_MAP_NAMES) {
        const m: BpfMap | undefined = dp.coll.maps.get(name);
        if (!m) continue;
        const bytes = m.memoryUsage() ?? NaN;
        out.push({ map: name, key_bytes: m.keySize, value_bytes: m.valueSize, max_entries: n, bytes, bytes_per_100k: Math.round((bytes / n) * 100_000), mb_per_100k: +((bytes / n) * 100_000 / 1e6).toFixed(2) });
      }
    } finally {
      dp.close();
    }
  }
  return out;
}

/**
 * Throughput over N sources (the lab's generator in sequence), every one of them over its limit
 * after its first packet: a token bucket of one packet an hour, as the minimal limiter's limit of 0
 * (its first packet passes, every later one is dropped), so that each packet is a lookup that hits
 * and a drop (no passes into the stack, which would measure the stack). Not a block: sl_penalty
 * holds 65,536 blocks, and a key its rule would block beyond them is held by the rule's limit
 * alone, which a limit per second would let through once a second. No cap on new states, no
 * aggregate, room for all.
 */
export function sourcesConfig(cidr?: number): ConfigDef {
  return {
    name: cidr ? `sluice-cidr-${cidr}` : 'sluice-drop',
    title: cidr ? `Sluice with ${cidr} source-CIDR entries` : 'Sluice, every source over its limit after its first packet',
    kind: 'xdp',
    shapes: [],
    start: async (site: Site) => {
      const dp = await BenchDatapath.load({ maxEntries: BIG_MAP, ...(cidr ? { cidrEntries: 1 << 18 } : {}) });
      const base: RuleSpec = { id: 0, alg: 'token', pps: 1, ppsPeriodMs: 3_600_000, ppsBurst: 1, aggregate: null };
      if (cidr) {
        // The flood's sources (10.101.0.0/22) fall in the last rule's prefixes.
        const rules = cidrPolicy(cidr, '10.101.0.0/22').map((r, i) => (i === 0 ? base : { ...base, id: r.id, src: r.src! }));
        dp.limiter.applyPolicy({ rules });
      } else {
        dp.limiter.applyPolicy({ rules: [base] });
      }
      dp.limiter.setConfig({ new_states_per_sec: 0xffffffff });
      const link = Link.attachXdp(dp.prog, site.dev, { netns: site.ns, mode: 'native' });
      const read = async (): Promise<Decisions> => {
        const t = dp.limiter.totals();
        return { decided: Number(t.packets[0]! + t.packets[1]!), passed: Number(t.packets[0]!) };
      };
      return {
        mode: 'native XDP',
        read,
        stop: async () => {
          link.close();
          dp.close();
        },
      };
    },
  };
}

export function sequenceShape(n: number): Shape {
  return { name: `seq${n}`, title: `${n} sources`, flood: { sources: n } };
}
