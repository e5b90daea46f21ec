/**
 * The receiver-side count: bpf/lab/count.bpf.o as a tc ingress filter on the server's veths counts,
 * per source address, what arrived after the XDP hook, i.e. what Sluice let through. Tests compare
 * it with what Sluice's own counters say it passed.
 *
 * Nothing is pinned: the tc filters hold the program and the program holds its maps, so the count
 * lives exactly as long as the lab's interfaces. It is found again by the filter's handle and
 * priority (tcQuery → program id → its maps by name).
 */
import { BpfMap, COUNT_OBJECT, ObjectSpec, Program, tcAttach, tcDetach, tcHookCreate, tcHookDestroy, tcQuery } from '../ebpf';
import {
  decodeLabCountKey,
  decodeLabCountTotals,
  decodeLabCountVal,
  LAB_COUNT_KEY_SIZE,
  LAB_COUNT_TOTALS_SIZE,
  LAB_COUNT_VAL_SIZE,
} from '../generated/lab';
import { bytesToIp } from './packet';

export { COUNT_OBJECT };

/** Handle and priority of the lab's filter: fixed, so that it is found again and never mistaken
 *  for another tool's filter on a shared clsact qdisc. */
export const COUNT_FILTER = { handle: 0x51ab, priority: 0x51ab } as const;

/** Where the count is attached: interfaces in one namespace. */
export interface CountSite {
  netns: string;
  ifnames: string[];
}

export interface CountAttachment {
  /** Interfaces whose clsact qdisc the lab created (and may remove again). */
  created_hooks: string[];
}

/** Load the counter once and attach it at ingress of every interface of `site`. */
export async function attachCount(site: CountSite, o: { maxSources?: number } = {}): Promise<CountAttachment> {
  const spec = ObjectSpec.open(COUNT_OBJECT);
  if (o.maxSources) spec.setMaxEntries('lab_count', o.maxSources);
  const coll = await spec.load();
  spec.close();
  const createdHooks: string[] = [];
  try {
    for (const ifname of site.ifnames) {
      if (tcHookCreate(ifname, 'ingress', { netns: site.netns })) createdHooks.push(ifname);
      tcAttach(ifname, 'ingress', coll.program('lab_count_in'), { ...COUNT_FILTER, replace: true, netns: site.netns });
    }
  } catch (e) {
    detachCount(site, { created_hooks: createdHooks });
    throw e;
  } finally {
    coll.close(); // the filters keep the program, and it its maps
  }
  return { created_hooks: createdHooks };
}

/** Remove the lab's filters; remove a clsact qdisc only where the lab created it. */
export function detachCount(site: CountSite, a: CountAttachment): void {
  for (const ifname of site.ifnames) {
    try {
      if (tcQuery(ifname, 'ingress', { ...COUNT_FILTER, netns: site.netns })) tcDetach(ifname, 'ingress', { ...COUNT_FILTER, netns: site.netns });
      if (a.created_hooks.includes(ifname)) tcHookDestroy(ifname, 'both', { netns: site.netns });
    } catch {
      /* the interface is gone already: so is everything on it */
    }
  }
}

export interface SourceCount {
  address: string;
  family: 4 | 6;
  packets: number;
  bytes: number;
}

export interface CountReport {
  /** Per source, most packets first. */
  sources: SourceCount[];
  /** Every IP packet seen, including those of sources that found no room in the map. */
  packets: number;
  bytes: number;
  non_ip: number;
  unrecorded: number;
}

/** The count's maps, found through the filter on the first interface. Close them after use. */
function openMaps(site: CountSite): { count: BpfMap; totals: BpfMap; close(): void } {
  const ifname = site.ifnames[0];
  const f = ifname === undefined ? undefined : tcQuery(ifname, 'ingress', { ...COUNT_FILTER, netns: site.netns });
  if (!f) throw new Error(`no lab count filter on ${ifname ?? '(no interface)'} in ${site.netns}: is the lab up?`);
  const prog = Program.fromId(f.progId);
  const maps: BpfMap[] = [];
  try {
    for (const id of prog.info().mapIds) maps.push(BpfMap.fromId(id));
  } finally {
    prog.close();
  }
  const count = maps.find((m) => m.info().name === 'lab_count');
  const totals = maps.find((m) => m.info().name.startsWith('lab_count_tota'));
  const close = (): void => maps.forEach((m) => m.close());
  if (!count || !totals) {
    close();
    throw new Error(`the lab count program ${f.progId} lacks its maps`);
  }
  return { count, totals, close };
}

const sum = (parts: Buffer[], decode: (b: Buffer) => { packets: bigint; bytes: bigint }): { packets: number; bytes: number } =>
  parts.reduce(
    (acc, b) => {
      const v = decode(b);
      return { packets: acc.packets + Number(v.packets), bytes: acc.bytes + Number(v.bytes) };
    },
    { packets: 0, bytes: 0 },
  );

/** What arrived at the server side, per source, since the lab came up (or the last reset). */
export function readCount(site: CountSite): CountReport {
  const m = openMaps(site);
  try {
    const sources: SourceCount[] = [];
    for (const chunk of m.count.lookupBatch()) {
      for (const [k, v] of chunk) {
        const key = decodeLabCountKey(k.subarray(0, LAB_COUNT_KEY_SIZE));
        const family = key.family === 6 ? 6 : 4;
        const total = sum(m.count.splitPerCpu(v), (b) => decodeLabCountVal(b.subarray(0, LAB_COUNT_VAL_SIZE)));
        sources.push({ address: bytesToIp(family === 4 ? key.addr.subarray(0, 4) : key.addr), family, ...total });
      }
    }
    sources.sort((a, b) => b.packets - a.packets || a.address.localeCompare(b.address));
    const t = m.totals.lookupPerCpu(Buffer.alloc(4)).map((b) => decodeLabCountTotals(b.subarray(0, LAB_COUNT_TOTALS_SIZE)));
    const add = (f: (x: (typeof t)[number]) => bigint): number => t.reduce((s, x) => s + Number(f(x)), 0);
    return { sources, packets: add((x) => x.packets), bytes: add((x) => x.bytes), non_ip: add((x) => x.non_ip), unrecorded: add((x) => x.unrecorded) };
  } finally {
    m.close();
  }
}

/** Start counting from zero. (Packets counted while the reset runs may be lost or kept.) */
export function resetCount(site: CountSite): void {
  const m = openMaps(site);
  try {
    for (const chunk of m.count.lookupBatch({ delete: true })) void chunk;
    m.totals.update(Buffer.alloc(4), Buffer.alloc(m.totals.valueBufferSize));
  } finally {
    m.close();
  }
}
