/**
 * Where a protection lives: its pins in the host's bpffs and its settings in /run (both vanish at
 * reboot, together). Layout:
 *
 *   /sys/fs/bpf/sluice/<scope>/<iface>/link        the XDP link (keeps the program attached)
 *                                     /prog        the program
 *                                     /maps/<name> every map of the data path; maps/sl_abi_map holds
 *                                                  the ABI stamp of the set (src/agent/abi.ts)
 *   /run/sluice/<scope>/<iface>.json               settings: limits, rules, lists, mode, sizes
 *
 * <scope> is "host" or the name of the network namespace the interface lives in, so that the same
 * interface name in two namespaces never collides; the settings also record the ifindex, checked
 * again on adoption (a re-created interface is a new one). Names are validated (./names.ts) and
 * written as one path component each (pathName: bpffs refuses "."), and every path is asserted to
 * be exactly its place under its root (under()) before anything is written or removed.
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { GeoConfig } from '../limiter/geoip';
import type { AlgName } from '../limiter/models';
import type { Lists } from '../limiter/lists';
import type { RuleSpec } from '../limiter/policy';
import { AgentCode, AgentError } from './errors';
import { netnsNameProblem, placeProblems } from './names';

/** Where pins live; SLUICE_PIN_ROOT moves them (a directory on a bpffs; tests use a private one). */
export const PIN_ROOT = resolve(process.env['SLUICE_PIN_ROOT'] || '/sys/fs/bpf/sluice');
/** Where settings and locks live; SLUICE_STATE_DIR moves them. */
export const STATE_ROOT = resolve(process.env['SLUICE_STATE_DIR'] || '/run/sluice');

export type Mode = 'native' | 'generic';

/** The default rule as the command line sets it. */
export interface Limits {
  algorithm: AlgName;
  /** Packets per period (a second unless ratePeriodMs says otherwise); null: no packet limit. */
  rate: number | null;
  /** The period of rate: 1000 (absent), 60,000 or 3,600,000 ms ("3/min" is rate 3, 60,000). */
  ratePeriodMs?: number;
  burst: number;
  bytesRate: number | null;
  /** The period of bytesRate, as ratePeriodMs. */
  bytesPeriodMs?: number;
  bytesBurst: number;
  windowMs: number;
  keyV4: number;
  keyV6: number;
}

export const DEFAULT_LIMITS: Limits = {
  algorithm: 'fixed', rate: 1000, burst: 0, bytesRate: null, bytesBurst: 0, windowMs: 1000, keyV4: 32, keyV6: 64,
};

/** What a policy says, whether it comes from a file, the command line or the daemon's config. */
export interface PolicyContent {
  /** The default rule. */
  limits: Limits;
  /** Rules after the default one. */
  rules: RuleSpec[];
  lists: Lists;
  malformedDrop: boolean;
  /** Also enforce at tc clsact egress (rules with dir egress or both). */
  egress: boolean;
  /** GeoIP tiers, or null for none. */
  geoip: GeoConfig | null;
  /** Rule name -> stable id (a rule keeps its counters and state while its name stays). */
  ruleIds: Record<string, number>;
}

/** Just the policy fields of x (e.g. of saved Settings, to re-apply them). */
export function policyContent(x: PolicyContent): PolicyContent {
  const { limits, rules, lists, malformedDrop, egress, geoip, ruleIds } = x;
  return { limits, rules, lists, malformedDrop, egress, geoip, ruleIds };
}

export interface Settings extends PolicyContent {
  format: 1;
  iface: string;
  netns: string | null;
  ifindex: number;
  mode: Mode;
  maxEntries: number;
  maxRules: number;
  /** Entries the compiled lists may have; absent in settings written before it was a setting (65,536). */
  maxListEntries?: number;
  object: string;
  /** Operator programs plugged into the plugin slots, by hook and slot. */
  plugins: { xdp: Record<string, PluginRef>; tc: Record<string, PluginRef> };
  policyFile: string | null;
  /**
   * Digest of each pinned map's layout (src/agent/abi.ts), as the stamp in maps/sl_abi_map covers
   * them; absent in settings written before pins were stamped.
   */
  mapLayouts?: Record<string, string>;
  attachedAt: string;
  updatedAt: string;
}

export interface PluginRef {
  object: string;
  program: string;
}

export interface Place {
  iface: string;
  netns: string | null;
}

/** Refuse a place whose names are not an interface's and a namespace's (src/agent/names.ts). */
export function assertPlace(p: { iface: unknown; netns?: unknown }): void {
  const problems = placeProblems(p);
  if (problems.length) {
    throw new AgentError(AgentCode.InvalidArgument, `${problems.map((x) => `--${x.key}: ${x.message}`).join('; ')}. Nothing was changed`);
  }
}

export function scopeOf(netns: string | null | undefined): string {
  if (netns === null || netns === undefined) return 'host';
  const problem = netnsNameProblem(netns);
  if (problem) throw new AgentError(AgentCode.InvalidArgument, `--netns: ${problem}. Nothing was changed`);
  return netns;
}

/**
 * root/parts…, asserted to be exactly that many levels below root. Names are validated before
 * they get here; this is the second lock on the door: a path that resolves anywhere else stops the
 * command, it never reaches a write or a recursive delete.
 */
export function under(root: string, ...parts: string[]): string {
  const path = resolve(root, ...parts);
  const rel = relative(root, path);
  if (rel === '' || isAbsolute(rel) || rel.split(sep).some((s) => s === '..' || s === '.' || s === '') || rel.split(sep).length !== parts.length) {
    throw new AgentError(AgentCode.InvalidArgument, `refusing the path ${JSON.stringify(path)}: it is not a place of its own under ${root} (names ${JSON.stringify(parts)}). Nothing was changed`);
  }
  return path;
}

/**
 * A name as one path component: bpffs refuses "." in names (EPERM), and a VLAN interface is
 * eth0.100, so "." is written %2E and "%" %25. Names without either (nearly all) are unchanged,
 * so pins made before keep their paths.
 */
export function pathName(name: string): string {
  return name.replace(/[%.]/g, (c) => (c === '%' ? '%25' : '%2E'));
}

/** The name a path component written by pathName() stands for. */
export function nameOfPath(component: string): string {
  return component.replace(/%(25|2E)/gi, (_, h: string) => (h === '25' ? '%' : '.'));
}

export function pinDir(p: Place): string {
  assertPlace(p);
  return under(PIN_ROOT, pathName(scopeOf(p.netns)), pathName(p.iface));
}

export function settingsPath(p: Place): string {
  assertPlace(p);
  return under(STATE_ROOT, pathName(scopeOf(p.netns)), `${pathName(p.iface)}.json`);
}

export function loadSettings(p: Place): Settings | undefined {
  const path = settingsPath(p);
  if (!existsSync(path)) return undefined;
  // Fields added since format 1 was written get their defaults.
  return { egress: false, plugins: { xdp: {}, tc: {} }, geoip: null, ruleIds: {}, ...JSON.parse(readFileSync(path, 'utf8')) } as Settings;
}

/** Written whole or not at all (a rename within the directory). */
export function saveSettings(s: Settings): void {
  const path = settingsPath(s);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ ...s, updatedAt: new Date().toISOString() }, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}

export function removeSettings(p: Place): void {
  rmSync(settingsPath(p), { force: true });
}

/** Every place with pins: (scope, iface) pairs under the pin root. */
export function listPlaces(): Place[] {
  if (!existsSync(PIN_ROOT)) return [];
  const out: Place[] = [];
  for (const scope of readdirSync(PIN_ROOT)) {
    const dir = join(PIN_ROOT, scope);
    if (!statSync(dir).isDirectory()) continue;
    for (const entry of readdirSync(dir)) {
      const p = { iface: nameOfPath(entry), netns: scope === 'host' ? null : nameOfPath(scope) };
      // Not made by Sluice (no valid name could make it): not a place, and never opened as one.
      if (placeProblems(p).length === 0 && pathName(p.iface) === entry && pathName(p.netns ?? 'host') === scope) out.push(p);
    }
  }
  return out.sort((a, b) => `${a.netns ?? ''}/${a.iface}`.localeCompare(`${b.netns ?? ''}/${b.iface}`));
}

/**
 * One change at a time per interface, across processes: an exclusive lock file holding the owner's
 * pid. A lock whose owner is gone is taken over.
 */
export async function withLock<T>(p: Place, fn: () => Promise<T> | T, timeoutMs = 10_000): Promise<T> {
  // Outside the scope directory, so that removing an emptied scope is not blocked by the lock.
  assertPlace(p);
  const path = under(join(STATE_ROOT, '.locks'), `${pathName(scopeOf(p.netns))}--${pathName(p.iface)}.lock`);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number(readFileSync(path, 'utf8') || 0);
      if (!owner || !alive(owner)) {
        rmSync(path, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new AgentError(AgentCode.Busy, `${p.iface}${p.netns ? ` in ${p.netns}` : ''} is being changed by process ${owner}; wait for it, or end it`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    try { unlinkSync(path); } catch { /* already gone */ }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
