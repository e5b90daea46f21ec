/**
 * Egress: what Sluice's tc program costs traffic that no rule limits, and what a byte limit leaves
 * a TCP transfer. A veth pair between two namespaces of this run (no route out); a TCP bulk transfer
 * from the server to the client (veth does TSO/GSO, so egress sees skbs of up to 64 KB), in rounds
 * that alternate: nothing attached, attached with an egress rule that claims only UDP (TCP passes
 * unclaimed; which of the two runs first alternates), attached with a TCP rule of 1 MB/s, burst
 * 256 KiB. veth throughput on a small VM
 * swings by a quarter from one run to the next, so the figure is the median of the rounds' ratios,
 * each taken between runs next to each other.
 */
import { enableStats, STACK_OBJECT, tcAttach, tcDetach, tcHookCreate } from '../../src/ebpf';
import { Testbed } from '../../src/lab/testbed';
import { tcpTransfer, type TransferResult } from '../../src/lab/transfer';
import { limiterMapsOf, loadDataPath } from '../../src/limiter/datapath';
import { Limiter } from '../../src/limiter/limiter';
import type { RuleSpec } from '../../src/limiter/policy';

const TC_FILTER = { handle: 0x51c, priority: 0x51c } as const;
const INGRESS_DEFAULT: RuleSpec = { id: 0, alg: 'token', pps: 100_000, ppsBurst: 100_000 };
export const EGRESS_LIMIT = { bytesPerSec: 1_000_000, burst: 256 * 1024 };
const egressRule = (proto: number): RuleSpec => ({ id: 1, name: `egress-${proto}`, dir: 'egress', proto, keyBy: 'dst', alg: 'token', pps: null, bps: EGRESS_LIMIT.bytesPerSec, bpsBurst: EGRESS_LIMIT.burst });

export interface EgressResult {
  rounds: number;
  seconds_per_run: number;
  /** MB/s of each round: nothing attached, attached with no rule claiming TCP, TCP limited. */
  free_mbps: number[];
  unclaimed_mbps: number[];
  limited_mbps: number[];
  /** unclaimed / free of each round, and their median. */
  unclaimed_ratio: number[];
  unclaimed_ratio_median: number;
  /** limited throughput / the limit, median over rounds. */
  limited_share_median: number;
  /** The tc program during the unclaimed runs (BPF run-time statistics): runs (skbs), ns per run,
   *  and its run time as a share of the transfers' wall time (of one CPU). */
  unclaimed_prog: { runs: number; ns_per_skb: number; cpu_share: number };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function egressBench(id: string, o: { rounds: number; seconds: number; log: (s: string) => void }): Promise<EgressResult> {
  const tb = new Testbed({ id });
  // As the stack tests load it (test/stack/lib.ts): 64 rule slots, the object's state size.
  const { coll } = await loadDataPath(STACK_OBJECT, { maxEntries: 100_000, maxRules: 64 });
  const sluice = { coll, limiter: new Limiter(limiterMapsOf(coll.maps)) };
  const stats = enableStats();
  try {
    const cli = await tb.addNs('ecli');
    const srv = await tb.addNs('esrv');
    const veth = await tb.addVeth(cli, srv);
    tcHookCreate(veth.b.ifname, 'egress', { netns: srv });
    const prog = sluice.coll.program('sluice_egress');
    const attach = (): void => void tcAttach(veth.b.ifname, 'egress', prog, { ...TC_FILTER, replace: true, netns: srv });
    const detach = (): void => tcDetach(veth.b.ifname, 'egress', { ...TC_FILTER, netns: srv });
    const r: { free: TransferResult[]; unclaimed: TransferResult[]; limited: TransferResult[] } = { free: [], unclaimed: [], limited: [] };
    let port = 9400;
    const free = async (): Promise<void> => {
      r.free.push(await tcpTransfer(tb, srv, cli, veth.a.ipv4, port++, o.seconds));
    };
    const cost = { runs: 0, ns: 0, wall: 0 };
    const unclaimed = async (): Promise<void> => {
      sluice.limiter.applyPolicy({ rules: [INGRESS_DEFAULT, egressRule(17)] });
      attach();
      const a = prog.info();
      const t = await tcpTransfer(tb, srv, cli, veth.a.ipv4, port++, o.seconds);
      const b = prog.info();
      cost.runs += b.runCnt - a.runCnt;
      cost.ns += b.runTimeNs - a.runTimeNs;
      cost.wall += t.seconds * 1e9;
      r.unclaimed.push(t);
      detach();
    };
    for (let i = 0; i < o.rounds; i++) {
      // Which of the pair runs first alternates, so that neither gains from its place.
      if (i % 2) { await unclaimed(); await free(); } else { await free(); await unclaimed(); }
      sluice.limiter.applyPolicy({ rules: [INGRESS_DEFAULT, egressRule(6)] });
      attach();
      r.limited.push(await tcpTransfer(tb, srv, cli, veth.a.ipv4, port++, o.seconds));
      detach();
      o.log(`  egress round ${i}: nothing attached ${r.free[i]!.mbps.toFixed(0)} MB/s, no rule claiming TCP ${r.unclaimed[i]!.mbps.toFixed(0)} MB/s, TCP at 1 MB/s ${r.limited[i]!.mbps.toFixed(2)} MB/s`);
    }
    const ratio = r.free.map((f, i) => +(r.unclaimed[i]!.mbps / f.mbps).toFixed(3));
    return {
      rounds: o.rounds,
      seconds_per_run: o.seconds,
      free_mbps: r.free.map((x) => +x.mbps.toFixed(1)),
      unclaimed_mbps: r.unclaimed.map((x) => +x.mbps.toFixed(1)),
      limited_mbps: r.limited.map((x) => +x.mbps.toFixed(3)),
      unclaimed_ratio: ratio,
      unclaimed_ratio_median: +median(ratio).toFixed(3),
      limited_share_median: +(median(r.limited.map((x) => x.mbps)) / (EGRESS_LIMIT.bytesPerSec / 1e6)).toFixed(3),
      unclaimed_prog: { runs: cost.runs, ns_per_skb: +(cost.ns / Math.max(1, cost.runs)).toFixed(1), cpu_share: +(cost.ns / Math.max(1, cost.wall)).toFixed(4) },
    };
  } finally {
    stats.close();
    sluice.coll.close();
    await tb.cleanup();
  }
}
