/**
 * `sluice demo`: the lab with four clients, the server's side protected by Sluice, three
 * well-behaved clients and one abusive one, a live view of what each offers, what passes and what
 * is dropped, a live change of the limit half-way, then everything torn down and a summary.
 * Ctrl-C at any point stops the traffic and tears everything down.
 */
import { Protection } from '../agent/protection';
import { takeSnapshot } from '../agent/report';
import type { Snapshot } from '../limiter/stats';
import { labCount, labDown, labFlood, labUp, type FloodResult, type LabLayout } from '../lab/index';

export interface DemoOptions {
  /** Total seconds of traffic (the limit changes half-way). */
  seconds: number;
  /** The limit per client, packets per second, before and after the change. */
  rateBefore: number;
  rateAfter: number;
  /** Offered packets per second of the well-behaved clients and of the abusive one. */
  polite: number[];
  abusive: number;
  /** Write the live view (ANSI) or plain lines (for logs, tests). */
  live: boolean;
  out: (s: string) => void;
  signal?: AbortSignal;
  /** Lab id (default "demo"): two demos side by side need two ids. */
  id?: string;
}

export interface DemoClientResult {
  client: number;
  address: string;
  role: 'well-behaved' | 'abusive';
  offered_pps: number;
  sent: number;
  passed: number;
  dropped: number;
}

export interface DemoResult {
  seconds: number;
  rate_before: number;
  rate_after: number;
  clients: DemoClientResult[];
  interrupted: boolean;
}

export const DEMO_LAB = 'demo';

const pad = (s: string | number, n: number): string => String(s).padStart(n);
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const offered = [...o.polite, o.abusive];
  const n = offered.length;
  o.out(`Setting up the lab: a server and ${n} clients in network namespaces (no route out), one veth pair each.\n`);
  const id = o.id ?? DEMO_LAB;
  await labDown({ id }); // a demo interrupted by a crash left its lab behind
  const { layout } = await labUp({ id, clients: n });
  const protections: Protection[] = [];
  let interrupted = false;
  const results: DemoClientResult[] = [];
  try {
    for (const c of layout.clients) {
      const r = await Protection.up({ iface: c.server.ifname, netns: layout.server.netns, limits: { algorithm: 'token', rate: o.rateBefore, burst: Math.ceil(o.rateBefore / 10) } });
      protections.push(r.protection);
    }
    o.out(`Sluice protects the server's side of every pair: token bucket, ${o.rateBefore} packets/s per client address.\n`);
    o.out(`Clients 1-${n - 1} send ${o.polite.join(', ')} packets/s (well-behaved); client ${n} sends ${fmt(o.abusive)} packets/s (abusive).\n\n`);

    const ac = new AbortController();
    const onAbort = (): void => { interrupted = true; ac.abort(); };
    o.signal?.addEventListener('abort', onAbort);
    const floods: Promise<FloodResult>[] = layout.clients.map((c, i) =>
      labFlood(layout, { client: c.index, pps: offered[i]!, seconds: o.seconds, path: 'paced', signal: ac.signal }));

    const t0 = Date.now();
    let prev = { snaps: protections.map(takeSnapshot), counts: passedBy(layout), at: t0 };
    let changed = false;
    const status: string[] = [];
    for (let tick = 1; tick <= o.seconds && !ac.signal.aborted; tick++) {
      await new Promise((r) => setTimeout(r, Math.max(0, t0 + tick * 1000 - Date.now())));
      const elapsed = (Date.now() - t0) / 1000;
      if (!changed && elapsed >= o.seconds / 2) {
        for (const p of protections) await p.update({ limits: { rate: o.rateAfter, burst: Math.ceil(o.rateAfter / 10) } });
        changed = true;
        status.push(`${elapsed.toFixed(0)}s: limit changed live to ${o.rateAfter} packets/s (no reload: one map update per interface)`);
      }
      const cur = { snaps: protections.map(takeSnapshot), counts: passedBy(layout), at: Date.now() };
      o.out(render(layout, offered, prev, cur, elapsed, changed ? o.rateAfter : o.rateBefore, status, o.live));
      prev = cur;
    }
    ac.abort();
    const sent = await Promise.all(floods.map((f) => f.catch(() => ({ sent: 0 }) as FloodResult)));
    o.signal?.removeEventListener('abort', onAbort);
    const counts = passedBy(layout);
    layout.clients.forEach((c, i) => {
      const t = takeSnapshot(protections[i]!).totals;
      results.push({
        client: c.index, address: c.ipv4, role: i === n - 1 ? 'abusive' : 'well-behaved', offered_pps: offered[i]!,
        sent: sent[i]!.sent, passed: counts.get(c.ipv4) ?? 0, dropped: t.dropped_packets,
      });
    });
  } finally {
    o.out('\nTearing down: Sluice off every interface, the lab removed.\n');
    for (const p of protections) {
      const place = p.place;
      p.close();
      await Protection.down(place).catch(() => undefined);
    }
    await labDown({ id });
  }
  return { seconds: o.seconds, rate_before: o.rateBefore, rate_after: o.rateAfter, clients: results, interrupted };
}

/** Packets that reached the server (after Sluice), by source address. */
function passedBy(l: LabLayout): Map<string, number> {
  return new Map(labCount(l).sources.map((s) => [s.address, s.packets]));
}

function render(l: LabLayout, offered: number[], prev: { snaps: Snapshot[]; counts: Map<string, number>; at: number },
  cur: { snaps: Snapshot[]; counts: Map<string, number>; at: number }, elapsed: number, limit: number, status: string[], live: boolean): string {
  const dt = (cur.at - prev.at) / 1000;
  const lines = [
    `Sluice demo: ${elapsed.toFixed(0)} s   limit ${limit} packets/s per client   (Ctrl-C stops and cleans up)`,
    `Sluice runs at XDP on the server's end of each client's veth (namespace ${l.server.netns}); "passed" is what reached the server.`,
    '',
    `client  address        role          offered/s  passed/s  dropped/s    passed    dropped`,
  ];
  let tp = 0;
  let td = 0;
  l.clients.forEach((c, i) => {
    const passed = cur.counts.get(c.ipv4) ?? 0;
    const passedRate = (passed - (prev.counts.get(c.ipv4) ?? 0)) / dt;
    const dropped = cur.snaps[i]!.totals.dropped_packets;
    const droppedRate = (dropped - prev.snaps[i]!.totals.dropped_packets) / dt;
    tp += passed;
    td += dropped;
    lines.push(`${pad(c.index, 6)}  ${c.ipv4.padEnd(13)}  ${(i === l.clients.length - 1 ? 'abusive' : 'well-behaved').padEnd(12)}  ${pad(fmt(offered[i]!), 9)}  ${pad(fmt(passedRate), 8)}  ${pad(fmt(droppedRate), 9)}  ${pad(fmt(passed), 8)}  ${pad(fmt(dropped), 9)}`);
  });
  lines.push(`${''.padEnd(71)}${pad(fmt(tp), 8)}  ${pad(fmt(td), 9)}`, '', ...status);
  return live ? `\x1b[H\x1b[2J${lines.join('\n')}\n` : `${lines.join('\n')}\n\n`;
}

export function summary(r: DemoResult): string {
  const half = r.seconds / 2;
  const lines = [`Summary${r.interrupted ? ' (interrupted)' : ''}: ${r.seconds} s, limit ${r.rate_before}/s then ${r.rate_after}/s per client.`];
  for (const c of r.clients) {
    const share = c.sent ? (100 * c.passed) / c.sent : 0;
    lines.push(`  client ${c.client} (${c.role}, ${fmt(c.offered_pps)}/s offered): ${fmt(c.sent)} sent, ${fmt(c.passed)} reached the server (${share.toFixed(1)}%), ${fmt(c.dropped)} dropped by Sluice`);
  }
  const abusive = r.clients.find((c) => c.role === 'abusive');
  if (abusive && !r.interrupted) {
    const expected = r.rate_before * half + r.rate_after * half;
    lines.push(`The abusive client got ${fmt(abusive.passed)} packets through: about what its limit allows (${fmt(expected)} in ${r.seconds} s, plus one burst); the well-behaved clients, under their limit, lost nothing.`);
  }
  return lines.join('\n');
}
