/**
 * Traffic for the deploy tests: a client and a server namespace joined by a veth, the lab's paced
 * generator sending from the client, and the lab's receiver-side count (bpf/lab/count.bpf.o at tc
 * ingress of the server's veth: what Sluice's XDP program let through) read for the client's
 * address, cheaply enough to be sampled every few milliseconds.
 */
import { attachCount, COUNT_FILTER, detachCount, type CountAttachment, type CountSite } from '../../src/lab/count';
import { flood, type FloodResult, type FloodTarget } from '../../src/lab/flood';
import { ipToBytes } from '../../src/lab/packet';
import { BpfMap, Program, tcQuery } from '../../src/ebpf';
import { decodeLabCountVal, encodeLabCountKey, LAB_COUNT_VAL_SIZE } from '../../src/generated/lab';
import type { Testbed, Veth } from '../lib/netns';

export interface Pair {
  cli: string;
  srv: string;
  veth: Veth;
  target: FloodTarget;
  site: CountSite;
  count: CountAttachment;
}

/** Two namespaces, a veth between them, and the receiver's count on the server's end. */
export async function makePair(tb: Testbed): Promise<Pair> {
  const cli = await tb.addNs('cli');
  const srv = await tb.addNs('srv');
  const veth = await tb.addVeth(cli, srv);
  const target: FloodTarget = {
    netns: cli, ifname: veth.a.ifname, mac: veth.a.mac, ipv4: veth.a.ipv4, ipv6: veth.a.ipv6,
    peerMac: veth.b.mac, peerIpv4: veth.b.ipv4, peerIpv6: veth.b.ipv6,
  };
  const site = { netns: srv, ifnames: [veth.b.ifname] };
  return { cli, srv, veth, target, site, count: await attachCount(site, { maxSources: 64 }) };
}

export function unpair(p: Pair | undefined): void {
  if (p) detachCount(p.site, p.count);
}

/** The receiver's count of packets from the client's address, through one open map. */
export class Received {
  private readonly map: BpfMap;
  private readonly key: Buffer;

  constructor(p: Pair) {
    const f = tcQuery(p.veth.b.ifname, 'ingress', { ...COUNT_FILTER, netns: p.srv });
    if (!f) throw new Error(`no count filter on ${p.veth.b.ifname}`);
    const prog = Program.fromId(f.progId);
    let found: BpfMap | undefined;
    try {
      for (const id of prog.info().mapIds) {
        const m = BpfMap.fromId(id);
        if (!found && m.info().name === 'lab_count') found = m;
        else m.close();
      }
    } finally {
      prog.close();
    }
    if (!found) throw new Error('the count program has no lab_count map');
    this.map = found;
    const addr = Buffer.alloc(16);
    ipToBytes(p.veth.a.ipv4).copy(addr);
    this.key = encodeLabCountKey({ family: 4, addr });
  }

  packets(): number {
    const v = this.map.lookup(this.key);
    if (!v) return 0;
    return this.map.splitPerCpu(v).reduce((s, b) => s + Number(decodeLabCountVal(b.subarray(0, LAB_COUNT_VAL_SIZE)).packets), 0);
  }

  close(): void {
    this.map.close();
  }
}

/** A flood of UDP frames from the client at pps for seconds; what it sent and what arrived. */
export async function floodCounted(p: Pair, pps: number, seconds: number, o: { record?: boolean } = {}): Promise<{ sent: FloodResult; received: number }> {
  const rx = new Received(p);
  try {
    const before = rx.packets();
    const sent = await flood(p.target, { pps, seconds, path: 'paced', ...(o.record ? { record: true } : {}) });
    return { sent, received: rx.packets() - before };
  } finally {
    rx.close();
  }
}
