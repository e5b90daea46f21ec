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
import { AsyncLocalStorage } from 'node:async_hooks';
import { closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { flock, LOCK, lockRoot, pinRoot, stateRoot } from '../ebpf';
import type { RuntimeLists } from '../limiter/lists';
import { AgentCode, AgentError } from './errors';
import { netnsNameProblem, placeProblems } from '../limiter/names';
import { point } from './testhooks';

/** Where pins live; SLUICE_PIN_ROOT moves them (a directory on a bpffs; tests use a private one). */
export const PIN_ROOT = pinRoot();
/** Where settings and locks live; SLUICE_STATE_DIR moves them. */
export const STATE_ROOT = stateRoot();
/**
 * Where a daemon marks the interfaces it manages, machine-wide (not per state directory, so that
 * two daemons with separate state directories still cannot manage one interface); SLUICE_LOCK_DIR
 * moves it.
 */
export const MANAGER_ROOT = lockRoot();

export type Mode = 'native' | 'generic';

/** Where the daemon writes its fleet's status (src/fleet/exchange.ts) for `sluice status`. */
export function fleetStatusPath(): string {
  return join(STATE_ROOT, 'fleet.json');
}

/** The fleet status a running daemon wrote, or null (no fleet, or its daemon is gone). */
export function readFleetStatus(): Record<string, unknown> | null {
  try {
    const s = JSON.parse(readFileSync(fleetStatusPath(), 'utf8')) as Record<string, unknown>;
    if (s['stopped'] || typeof s['pid'] !== 'number') return null;
    try { process.kill(s['pid'], 0); } catch { return null; }
    return s;
  } catch {
    return null;
  }
}

// The default rule's limits are the rule model's (src/limiter/rule.ts); kept here under their old names.
export { DEFAULT_LIMITS, type Limits } from '../limiter/rule';
import type { PolicyContent } from '../limiter/rule';

/** What a policy says, whether it comes from a file, the command line or the daemon's config. */
/** The policy part of the settings: the rule model's (src/limiter/rule.ts). */
export type { PolicyContent } from '../limiter/rule';

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
   * List edits made at runtime, apart from the policy file's lists (`lists` is the two laid
   * together: what the kernel holds); absent when there are none or in older settings.
   */
  runtime?: RuntimeLists;
  /** sl_config.new_states_per_sec (docs/datapath.md): 0 or absent, the default of 100,000 a second per CPU. */
  newStatesPerSec?: number;
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

/** Refuse a place whose names are not an interface's and a namespace's (src/limiter/names.ts). */
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

/**
 * Write a file whole or not at all, and durably: a temporary file beside it, fsync, rename over
 * the old one, fsync of the directory. A crash at any point leaves the old content or the new.
 */
export function writeFileAtomic(path: string, text: string, hook?: string): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  if (hook) point(hook);
  renameSync(tmp, path);
  fsyncDir(dir);
}

/** Remove a file durably (the directory fsynced); false when it was not there. */
export function removeFileDurably(path: string): boolean {
  if (!existsSync(path)) return false;
  rmSync(path, { force: true });
  fsyncDir(dirname(path));
  return true;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

/** Written whole or not at all, and durably (writeFileAtomic). */
export function saveSettings(s: Settings): void {
  writeFileAtomic(settingsPath(s), JSON.stringify({ ...s, updatedAt: new Date().toISOString() }, null, 2) + '\n', 'settings-tmp');
}

/** The journal of the change in progress on a place (src/agent/protection.ts, commit()). */
export function journalPath(p: Place): string {
  return settingsPath(p).replace(/\.json$/, '.journal.json');
}

export function removeSettings(p: Place): void {
  for (const path of [settingsPath(p), journalPath(p)]) rmSync(path, { force: true });
}

/** Every place with pins: (scope, iface) pairs under the pin root. */
export function listPlaces(): Place[] {
  if (!existsSync(PIN_ROOT)) return [];
  const out: Place[] = [];
  // Another process may remove a directory while this one reads: what is gone is not listed.
  const gone = (e: unknown): boolean => (e as NodeJS.ErrnoException).code === 'ENOENT';
  for (const scope of readdirSync(PIN_ROOT)) {
    const dir = join(PIN_ROOT, scope);
    let entries: string[];
    try {
      if (!statSync(dir).isDirectory()) continue;
      entries = readdirSync(dir);
    } catch (e) {
      if (gone(e)) continue;
      throw e;
    }
    for (const entry of entries) {
      const p = { iface: nameOfPath(entry), netns: scope === 'host' ? null : nameOfPath(scope) };
      // Not made by Sluice (no valid name could make it): not a place, and never opened as one.
      if (placeProblems(p).length === 0 && pathName(p.iface) === entry && pathName(p.netns ?? 'host') === scope) out.push(p);
    }
  }
  return out.sort((a, b) => `${a.netns ?? ''}/${a.iface}`.localeCompare(`${b.netns ?? ''}/${b.iface}`));
}

/** The locks this async context holds (so that a locked section may call another: reentrant). */
const held = new AsyncLocalStorage<ReadonlySet<string>>();

function lockPath(p: Place): string {
  // Outside the scope directory, so that removing an emptied scope is not blocked by the lock.
  assertPlace(p);
  return under(join(STATE_ROOT, '.locks'), `${pathName(scopeOf(p.netns))}--${pathName(p.iface)}.lock`);
}

/** Whether this async context holds the lock of p (inside withLock). */
export function holdsLock(p: Place): boolean {
  return held.getStore()?.has(lockPath(p)) ?? false;
}

/** An exclusive flock(2) of path, or undefined when another open file holds it. Never unlinked. */
function tryFlock(path: string): number | undefined {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const fd = openSync(path, 'a+', 0o600);
  try {
    if (flock(fd, LOCK.EX | LOCK.NB)) {
      // The holder, for messages only: the lock is the flock, never the content.
      ftruncateSync(fd, 0);
      writeSync(fd, `${process.pid}\n`);
      return fd;
    }
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  closeSync(fd);
  return undefined;
}

function holderOf(path: string): number | undefined {
  try {
    return Number(readFileSync(path, 'utf8').split('\n')[0]) || undefined;
  } catch {
    return undefined;
  }
}

function release(fd: number): void {
  // Closing the last descriptor releases the flock; the file stays (unlinking a lock file lets
  // two processes lock two different files of one name).
  try { ftruncateSync(fd, 0); } catch { /* released anyway */ }
  closeSync(fd);
}

/**
 * One change at a time per interface, across processes: flock(2) of a lock file per interface.
 * The kernel releases it when its holder exits, however it exits, so there is no stale lock to
 * take over and no race in taking one over. Every read-modify-write of an interface's settings
 * and pins happens inside fn. Reentrant within one async context.
 */
export async function withLock<T>(p: Place, fn: () => Promise<T> | T, timeoutMs = 10_000): Promise<T> {
  const path = lockPath(p);
  const mine = held.getStore();
  if (mine?.has(path)) return fn();
  const deadline = Date.now() + timeoutMs;
  let fd: number | undefined;
  while ((fd = tryFlock(path)) === undefined) {
    if (Date.now() > deadline) {
      const owner = holderOf(path);
      throw new AgentError(AgentCode.Busy, `${p.iface}${p.netns ? ` in ${p.netns}` : ''} is being changed by ${owner ? `process ${owner}` : 'another process'}; wait for it, or end it`);
    }
    await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
  }
  try {
    return await held.run(new Set([...(mine ?? []), path]), fn);
  } finally {
    release(fd);
  }
}

/** Run fn under the lock of p if it is free now (or held by this context); undefined if not. */
export function withLockIfFree<T>(p: Place, fn: () => T): { value: T } | undefined {
  const path = lockPath(p);
  if (held.getStore()?.has(path)) return { value: fn() };
  const fd = tryFlock(path);
  if (fd === undefined) return undefined;
  try {
    return { value: held.run(new Set([...(held.getStore() ?? []), path]), fn) };
  } finally {
    release(fd);
  }
}

/** A lock held for the life of a process (a daemon's); release() lets it go. */
export interface HeldLock {
  path: string;
  release(): void;
}

/** Take a lock for as long as this process wants it, or return the pid that holds it. */
export function holdLock(path: string, note: string): HeldLock | { holder: number | undefined; note: string } {
  const fd = tryFlock(path);
  if (fd === undefined) {
    const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
    return { holder: holderOf(path), note: text.split('\n').slice(1).join(' ').trim() };
  }
  writeSync(fd, `${note}\n`);
  let open = true;
  return { path, release: () => { if (open) { open = false; release(fd); } } };
}

/** The lock a daemon holds on its state directory. */
export const daemonLockPath = (): string => join(STATE_ROOT, '.daemon.lock');

/** The lock a daemon holds on each interface it manages (machine-wide, MANAGER_ROOT). */
export function managerLockPath(p: Place): string {
  assertPlace(p);
  return under(MANAGER_ROOT, `${pathName(scopeOf(p.netns))}--${pathName(p.iface)}.manager`);
}

/** The daemon that manages p now (its pid and its note: state directory and config), or undefined. */
export function managerInfo(p: Place): { pid: number; note: string | null } | undefined {
  const pid = managerOf(p);
  if (pid === undefined) return undefined;
  let note: string | null = null;
  try { note = readFileSync(managerLockPath(p), 'utf8').split('\n')[1]?.trim() || null; } catch { /* released meanwhile */ }
  return { pid, note };
}

/** The pid of the daemon that manages p now, or undefined when none does. */
export function managerOf(p: Place): number | undefined {
  const path = managerLockPath(p);
  if (!existsSync(path)) return undefined;
  const fd = openSync(path, 'r');
  try {
    if (flock(fd, LOCK.SH | LOCK.NB)) return undefined; // nobody holds it
    return holderOf(path);
  } finally {
    closeSync(fd);
  }
}
