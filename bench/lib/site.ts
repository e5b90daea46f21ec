/**
 * The benchmark's testbed: a lab (src/lab) of its own, named uniquely per run, brought up with
 * what the measurements need and taken down whatever happens (an error, Ctrl-C, SIGTERM).
 * Traffic stays inside its namespaces: the lab gives them no route out, and nothing here touches
 * an interface outside them.
 */
import { randomBytes } from 'node:crypto';
import { Protection } from '../../src/agent/protection';
import { countSite, floodTarget, labDown, labUp, type LabLayout } from '../../src/lab';
import { detachCount } from '../../src/lab/count';
import { nsExec, run } from '../../src/lab/netns';
import { startSink } from './peers';
import { RX_CPU, SINK_PORT, type Site } from './throughput';

export interface Testbed {
  site: Site;
  layout: LabLayout;
  close(): Promise<void>;
}

/** A lab id for this run: a letter and five random letters or digits (interface names stay short). */
export function benchId(): string {
  const a = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return 'b' + [...randomBytes(5)].map((x) => a[x % a.length]).join('');
}

/** Pin every thread of this process to `cpu` (a CPU list such as '0,1' lets it go again); the
 *  live-frame workers pin themselves to RX_CPU. */
export async function pinSelf(cpu: number | string): Promise<void> {
  await run('taskset', ['-a', '-p', '-c', String(cpu), String(process.pid)], { check: true });
}

export async function openTestbed(id: string, log: (s: string) => void): Promise<Testbed> {
  const { layout } = await labUp({ id, clients: 1 });
  let sink: { stop(): Promise<void> } | undefined;
  try {
    const c = layout.clients[0]!;
    const ns = layout.server.netns;
    // The receiver-side count at tc ingress would add its cost to every packet the stack sees.
    detachCount(countSite(layout), layout.count);
    // Spoofed and multi-source floods come from outside the on-link prefix: no reverse-path
    // filter, so that the stack (and what listens in it) sees them.
    await nsExec(ns, 'sysctl', ['-q', '-w', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', `net.ipv4.conf.${c.server.ifname}.rp_filter=0`], { check: true });
    sink = await startSink(ns, RX_CPU, SINK_PORT);
    log(`testbed ${id}: ${c.netns}/${c.ifname} -> ${ns}/${c.server.ifname} (lab namespaces, no route out)`);
    const site: Site = { target: floodTarget(layout, 1), ns, dev: c.server.ifname, id };
    const s = sink;
    return {
      site,
      layout,
      close: async () => {
        await s.stop().catch(() => undefined);
        // A section that protected the veth through the control plane removes its pins itself;
        // after an interruption this does (idempotent).
        await Protection.down({ iface: site.dev, netns: ns }).catch(() => undefined);
        await labDown({ id });
      },
    };
  } catch (e) {
    await sink?.stop().catch(() => undefined);
    await labDown({ id });
    throw e;
  }
}
