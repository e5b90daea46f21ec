/**
 * The fault suite's eyes inside a case's mount namespace (run there by nsenter, with the case's
 * SLUICE_PIN_ROOT and SLUICE_STATE_DIR): what the kernel enforces (the live half read through the
 * pinned maps), what the settings file says, whether the pinned link really protects the interface,
 * the counters and whether a rollback is pending. Optionally it then does what "the next start"
 * does (`sluice up` with no new settings: adopt and re-apply the saved ones) and reads again, and
 * restores a given policy, so that one process serves one kill (node starts are the suite's cost).
 *
 *   node probe.js '{"iface":…,"netns":…,"recover":true,"restore":"old.yaml"}'
 *
 * Prints one JSON line: { before, recovered?, restored? }, each a Snapshot (see lib.ts).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readPending } from '../../src/agent/pending';
import { Protection } from '../../src/agent/protection';
import { liveRules } from '../../src/agent/report';
import { loadSettings, pinDir, policyContent, type Place } from '../../src/agent/state';
import { loadPolicy } from '../../src/config/policy-file';
import { ifindex, Link, xdpQuery } from '../../src/ebpf';
import { ListFlags } from '../../src/generated/types';
import { bytesToIp } from '../../src/lab/packet';
import { settleDueRollback } from '../../src/agent/rollback';

export interface Snapshot {
  /** The pinned link holds the interface's ifindex and the interface runs the link's program. */
  protected: boolean;
  why?: string;
  /** The live half: the default rule's packet limit (raw) and the denied prefixes. */
  kernel: { version: number; rate: string; burst: string; deny: string[] } | null;
  settings: { rate: number | null; burst: number; deny: string[] } | null;
  /** Packets decided since attach (allowed + dropped, every rule): a reset shows as a drop. */
  decided: number | null;
  pending: boolean;
  error?: string;
}

function snap(p: Place): Snapshot {
  const s = loadSettings(p);
  const out: Snapshot = {
    protected: false, kernel: null, decided: null, pending: !!readPending(p),
    settings: s ? { rate: s.limits.rate, burst: s.limits.burst, deny: [...s.lists.deny].sort() } : null,
  };
  if (!existsSync(join(pinDir(p), 'link'))) { out.why = 'no link pin'; return out; }
  // Whether the interface is protected is the kernel's business: the pinned link and what the
  // interface runs, read even when the rest of the pins cannot be opened.
  try {
    const link = Link.fromPin(join(pinDir(p), 'link'));
    try {
      const info = link.info();
      const idx = ifindex(p.iface, p.netns ?? undefined);
      const q = xdpQuery(idx, p.netns ? { netns: p.netns } : {});
      out.protected = info.ifindex === idx && [q.progId, q.nativeProgId, q.genericProgId].includes(info.progId);
      if (!out.protected) out.why = `link ifindex ${info.ifindex} (iface ${idx}), link prog ${info.progId}, running ${q.progId || q.nativeProgId || q.genericProgId || 'none'}`;
    } finally {
      link.close();
    }
  } catch (e) {
    out.why = `link: ${(e as Error).message.slice(0, 200)}`;
  }
  let prot: Protection | undefined;
  try {
    prot = Protection.open(p);
    const v = prot.limiter.version();
    const r0 = liveRules(prot).get(0);
    const deny = prot.limiter.liveListEntries()
      .filter((e) => (e.flags & ListFlags.DENY) !== 0)
      .map((e) => `${bytesToIp(e.family === 4 ? e.addr.subarray(0, 4) : e.addr)}/${e.plen}`).sort();
    out.kernel = { version: v, rate: String(r0?.pkt.rate ?? 'none'), burst: String(r0?.pkt.burst ?? 'none'), deny };
    const t = prot.limiter.totals();
    out.decided = t.packets.reduce((a, b) => a + Number(b), 0);
  } catch (e) {
    out.error = (e as Error).message.slice(0, 300);
  } finally {
    prot?.close();
  }
  return out;
}

async function main(): Promise<void> {
  const o = JSON.parse(process.argv[2] ?? '{}') as Place & { recover?: boolean | 'if-needed'; restore?: string; pairs?: string[] };
  const place: Place = { iface: o.iface, netns: o.netns ?? null };
  const res: { before: Snapshot; recovered?: Snapshot; recoverError?: string; restored?: Snapshot; restoreError?: string } = { before: snap(place) };
  // 'if-needed': only when the fault left something for the next start to do (the kernel and the
  // settings disagree, the protection is off or cannot be opened); each load costs seconds.
  const b = res.before;
  // pairs: "kernel signature|settings signature" of the states that agree (old, new; lib.ts).
  const ks = b.kernel ? `${b.kernel.rate}/${b.kernel.burst} deny ${b.kernel.deny.join(',')}` : null;
  const ss = b.settings ? `${b.settings.rate}/${b.settings.burst} deny ${b.settings.deny.join(',')}` : null;
  const apart = !(o.pairs ?? []).includes(`${ks}|${ss}`);
  if (o.recover === true || (o.recover === 'if-needed' && (!b.protected || b.error !== undefined || b.kernel === null || apart))) {
    try {
      // As `sluice up` starts: a rollback that is due and has lost its holder is done first.
      await settleDueRollback(place);
      (await Protection.up({ ...place })).protection.close();
    } catch (e) {
      res.recoverError = `${(e as { code?: string }).code ?? ''} ${(e as Error).message}`.slice(0, 300);
    }
    res.recovered = snap(place);
  }
  if (o.restore) {
    try {
      // As `sluice policy apply FILE` does.
      const prior = loadSettings(place);
      // As `sluice policy apply FILE` does, but through one flip on the adopted pins (no reload of
      // the program: the restore is the suite's, not a case's, and a load costs seconds).
      const pf = loadPolicy(o.restore, prior?.ruleIds ?? {}, prior?.maxRules);
      const { limits, rules, lists, malformedDrop, geoip, ruleIds } = policyContent(pf);
      const prot = Protection.open(place);
      try { await prot.update({ limits, rules, lists, malformedDrop, geoip, ruleIds }); } finally { prot.close(); }
    } catch (e) {
      res.restoreError = `${(e as { code?: string }).code ?? ''} ${(e as Error).message}`.slice(0, 300);
    }
    res.restored = snap(place);
  }
  process.stdout.write(JSON.stringify(res) + '\n');
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: (e as Error).message }) + '\n');
  process.exit(1);
});
