/**
 * Protecting an interface: load, attach by link, pin, adopt what is pinned, upgrade in place,
 * change settings live, and take it all down again. One Protection is one protected interface,
 * opened from its pins.
 *
 * Invariants: a failed load or attach leaves a working protection as it was (the new program is
 * loaded and checked before anything is swapped); an upgrade replaces the program through the link
 * (no moment without protection); an invalid policy never replaces a valid one (compiled first).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import {
  BpfError, BpfMap, hasBpfPrivileges, ifindex, Link, PermissionError, PROD_OBJECT, Program,
  tcAttach, tcDetach, tcHookCreate, tcQuery, xdpQuery,
  type Collection,
} from '../ebpf';
import {
  DEFAULT_MAX_RULES, limiterMapsOf, loadDataPath, mapOf, PLUGIN_MAPS, PROGRAM, TC_PROGRAM, type DataPathOptions,
} from '../limiter/datapath';
import { Limiter, ListsTooLargeError, RULE_SIZED_MAPS, STATE_MAP_NAMES } from '../limiter/limiter';
import { compiledListsSteps, emptyLists, normaliseListsSteps, type Lists, type RuntimeLists } from '../limiter/lists';
import { runAsync } from '../limiter/steps';
import { compilePolicy, type PolicySpec, type RuleSpec } from '../limiter/policy';
import { defaultRuleOf } from '../limiter/rule';
import { plugProgram, unplugProgram, type Hook } from '../limiter/plugins';
import { compileGeo, type GeoCompiled, type GeoConfig } from '../limiter/geoip';
import { Abi } from '../generated/types';
import { ABI_MAP, checkStamp, describeStamp, layoutHashOf, objectLayout, readStamp, stampOf, writeStamp, type ObjectLayout } from './abi';
import { AgentCode, AgentError } from './errors';
import { assertNoPending, pendingPath } from './pending';
import {
  DEFAULT_LIMITS, journalPath, loadSettings, pinDir, removeFileDurably, removeSettings, saveSettings, scopeOf, settingsPath, withLock,
  withLockIfFree, writeFileAtomic,
  type Limits, type Mode, type Place, type Settings,
} from './state';
import { point } from './testhooks';

export const DEFAULT_OBJECT = PROD_OBJECT;
export { PROGRAM, TC_PROGRAM };
/** Sluice's tc egress filter: this handle and priority, replaced in place on upgrade. */
export const TC_FILTER = { handle: 0x51c, priority: 0x51c } as const;
export const DEFAULT_MAX_ENTRIES = 100_000;
export { DEFAULT_MAX_RULES };
/** List entries per policy half (sl_lists holds two halves): bpf/sluice.h, SL_DEFAULT_LIST_MAX. */
export const DEFAULT_MAX_LIST_ENTRIES = 65536;

export interface UpOptions extends Place {
  mode?: 'auto' | Mode;
  maxEntries?: number;
  maxRules?: number;
  /** Entries the compiled lists may have (each half of sl_lists holds this many). */
  maxListEntries?: number;
  object?: string;
  resetState?: boolean;
  limits?: Partial<Limits>;
  rules?: RuleSpec[];
  lists?: Lists;
  malformedDrop?: boolean;
  egress?: boolean;
  geoip?: GeoConfig | null;
  ruleIds?: Record<string, number>;
  policyFile?: string | null;
  /** The runtime layer of list edits to keep (docs/cli.md); absent: the prior one. */
  runtime?: RuntimeLists;
  /** sl_config.new_states_per_sec; 0: the default; absent: the prior value. */
  newStatesPerSec?: number;
  /** The id of the pending rollback this change is made for (its own apply, or the rollback): not refused by it. */
  allowPending?: string;
}

export interface UpResult {
  action: 'attached' | 'adopted' | 'upgraded';
  warnings: string[];
  protection: Protection;
}

const where = (p: Place): string => `${p.iface}${p.netns ? ` (network namespace ${p.netns})` : ''}`;

/**
 * Limits changed by a partial change. A rate brings its period: one given without (`rate: 1k`,
 * from the config file or the API, where per second is the absent period) is per second, whatever
 * the period of the rate it replaces (1000/min must not follow from 30/min and then 1k).
 */
export function withLimits(base: Limits, change: Partial<Limits> | undefined): Limits {
  const next = { ...base, ...change };
  if (change && 'rate' in change && !('ratePeriodMs' in change)) delete next.ratePeriodMs;
  if (change && 'bytesRate' in change && !('bytesPeriodMs' in change)) delete next.bytesPeriodMs;
  return next;
}

/** The policy a Settings describes: the default rule from the limits, then the rules. */
export function policyOf(s: Pick<Settings, 'limits' | 'rules'>): PolicySpec {
  return { rules: [defaultRuleOf(s.limits), ...s.rules] };
}

function checkPrivileges(): void {
  if (!hasBpfPrivileges()) {
    throw new PermissionError('Sluice needs root, or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN (adopting pinned programs and links by id needs CAP_SYS_ADMIN): run it with sudo', {
      errno: 1, errnoName: 'EPERM', op: 'capabilities',
    });
  }
}

function checkBpffs(): void {
  const mounts = readFileSync('/proc/self/mounts', 'utf8');
  if (!mounts.split('\n').some((l) => l.split(' ')[1] === '/sys/fs/bpf' && l.split(' ')[2] === 'bpf')) {
    throw new AgentError(AgentCode.Bpffs, 'the BPF filesystem is not mounted at /sys/fs/bpf, so protection could not outlive this command: mount it with `mount -t bpf bpf /sys/fs/bpf` (scripts/setup.sh does)');
  }
}

function resolveIfindex(p: Place): number {
  if (p.netns && !existsSync(join('/var/run/netns', p.netns))) {
    throw new AgentError(AgentCode.NoNetns, `no network namespace named "${p.netns}" (see \`ip netns list\`)`);
  }
  try {
    return ifindex(p.iface, p.netns ?? undefined);
  } catch {
    throw new AgentError(AgentCode.NoIface, `no interface named "${p.iface}"${p.netns ? ` in network namespace ${p.netns}` : ''} (see \`ip${p.netns ? ` -n ${p.netns}` : ''} link\`)`);
  }
}

function pinnedMaps(dir: string): Map<string, BpfMap> {
  const out = new Map<string, BpfMap>();
  const mapsDir = join(dir, 'maps');
  if (!existsSync(mapsDir)) return out;
  for (const name of readdirSync(mapsDir)) out.set(name, BpfMap.fromPin(join(mapsDir, name)));
  return out;
}

/**
 * Maps of the running program whose pins someone removed: pinned again, the program's own, so that
 * adoption never puts a fresh map beside the one the program still writes (its counters would
 * then read zero forever). Returns the names re-pinned.
 */
function repinRunningMaps(dir: string, maps: Map<string, BpfMap>): string[] {
  if (!existsSync(join(dir, 'link'))) return [];
  const done: string[] = [];
  const link = Link.fromPin(join(dir, 'link'));
  try {
    const progId = link.info().progId;
    if (!progId) return [];
    const prog = Program.fromId(progId);
    try {
      for (const id of prog.info().mapIds) {
        const m = BpfMap.fromId(id);
        if (!m.name.includes('.') && !maps.has(m.name)) {
          m.pin(join(dir, 'maps', m.name));
          maps.set(m.name, m);
          done.push(m.name);
        } else {
          m.close();
        }
      }
    } finally {
      prog.close();
    }
  } finally {
    link.close();
  }
  return done;
}

function limiterOf(maps: Map<string, BpfMap>): Limiter {
  const missing = (name: string): AgentError =>
    new AgentError(AgentCode.StateIncompatible, `the pinned state has no map ${name}: start afresh with \`sluice up --reset-state\``);
  return new Limiter(limiterMapsOf(maps, missing));
}

function validateLimits(l: Limits): void {
  // compilePolicy checks ranges; this adds what only the command line can get wrong.
  if (l.rate === null && l.bytesRate === null) {
    throw new AgentError(AgentCode.InvalidArgument, 'a limit needs a packet rate (--rate) or a byte rate (--bytes-rate)');
  }
}

/** GeoIP compilations by configuration: a dataset is read once per process. */
const geoCache = new Map<string, GeoCompiled>();

export function geoOf(cfg: GeoConfig): GeoCompiled {
  const key = JSON.stringify(cfg);
  let g = geoCache.get(key);
  if (!g) {
    try {
      g = compileGeo(cfg);
    } catch (e) {
      throw new AgentError(AgentCode.InvalidArgument, (e as Error).message);
    }
    geoCache.set(key, g);
  }
  return g;
}

/** Entries the lists of these settings may compile to (settings from before it was a setting: the default). */
const listMax = (s: Pick<Settings, 'maxListEntries'>): number => s.maxListEntries ?? DEFAULT_MAX_LIST_ENTRIES;

/**
 * Refuse lists that the data path could not hold, before anything changes. Compiled in slices
 * (src/limiter/steps.ts) and remembered, so the write that follows does not compile them again.
 */
async function checkListsFit(s: Pick<Settings, 'lists' | 'maxListEntries'>): Promise<void> {
  const n = (await runAsync(compiledListsSteps(s.lists))).length;
  if (n > listMax(s)) throw new ListsTooLargeError(n, listMax(s));
}

/**
 * The whole of a Settings into the data path, as one transaction (Limiter.applyAsync): written in
 * slices that let the event loop run between them (a daemon serving its API while 100,000 list
 * entries are written), made live by one flip.
 */
async function applyAll(limiter: Limiter, s: Settings): Promise<void> {
  const geo = s.geoip ? geoOf(s.geoip) : undefined;
  // One transaction: rules, lists and the malformed verdict go live in one flip.
  await limiter.applyAsync({ policy: policyOf(s), geo: geo ? { entries: geo.entries, hash: geo.hash } : null, lists: s.lists, malformedDrop: s.malformedDrop });
  // The new-state cap is global (sl_config), not per policy half: written after the flip.
  if (limiter.config().new_states_per_sec !== (s.newStatesPerSec ?? 0)) limiter.setConfig({ new_states_per_sec: s.newStatesPerSec ?? 0 });
}

/** The record of a change in progress: enough to finish it or undo it after a crash. */
interface Journal {
  format: 1;
  pid: number;
  at: string;
  /** The live policy version before the change; the change's flip makes it versionBefore + 1. */
  versionBefore: number;
  previous: Settings | null;
  next: Settings;
}

/**
 * A change of an adopted protection as one transaction: the journal (previous and next settings,
 * the version before) is written durably, then the kernel flips (Limiter.apply: one write makes
 * the whole new policy live), then the settings are saved, then the journal is removed. A crash
 * at any point is finished or undone by the next command or daemon start (recoverJournal): the
 * kernel's version tells whether the flip happened, and the settings are made to say what the
 * kernel runs. Called under the interface's lock.
 */
async function commit(p: Place, limiter: Limiter, previous: Settings | undefined, next: Settings): Promise<void> {
  const versionBefore = limiter.version();
  const journal: Journal = { format: 1, pid: process.pid, at: new Date().toISOString(), versionBefore, previous: previous ?? null, next };
  writeFileAtomic(journalPath(p), JSON.stringify(journal) + '\n');
  point('journal');
  try {
    await applyAll(limiter, next);
  } catch (e) {
    // Refused or failed before the flip (the flip is Limiter.apply's last write): nothing is live.
    if (limiter.version() === versionBefore) removeFileDurably(journalPath(p));
    throw e;
  }
  point('flip');
  try {
    saveSettings(next);
  } catch (e) {
    // The kernel runs next, the file still says previous: flip the kernel back, so that both say
    // previous. If that fails too, the journal stays and the next command rolls forward.
    if (previous) {
      try {
        await applyAll(limiter, previous);
        removeFileDurably(journalPath(p));
      } catch { /* the journal finishes it */ }
    }
    throw e;
  }
  point('save');
  removeFileDurably(journalPath(p));
}

/**
 * Finish or undo a change that a crash interrupted (its journal is there): when the kernel flipped
 * (its version moved on from the journal's), the new settings are saved (rolled forward);
 * otherwise the previous settings are (rolled back; the idle half it may have written is never
 * live). Called under the interface's lock. Returns what was done.
 */
export function recoverJournal(p: Place): 'forward' | 'back' | undefined {
  const path = journalPath(p);
  if (!existsSync(path)) return undefined;
  let j: Journal;
  try {
    j = JSON.parse(readFileSync(path, 'utf8')) as Journal;
  } catch {
    // Written atomically, so never torn; unreadable means not ours: the settings stay as they are.
    removeFileDurably(path);
    return undefined;
  }
  const dir = pinDir(p);
  let version: number | undefined;
  if (existsSync(join(dir, 'maps', 'config_map'))) {
    const maps = pinnedMaps(dir);
    try {
      version = limiterOf(maps).version();
    } finally {
      for (const m of maps.values()) m.close();
    }
  }
  let done: 'forward' | 'back' | undefined;
  if (version === undefined) {
    done = undefined; // the pins are gone: nothing runs that settings could disagree with
  } else if (version !== j.versionBefore) {
    saveSettings(j.next);
    done = 'forward';
  } else if (j.previous) {
    saveSettings(j.previous);
    done = 'back';
  }
  removeFileDurably(path);
  if (done) process.emitWarning(`an interrupted change of ${where(p)} (process ${j.pid}, ${j.at}) was ${done === 'forward' ? 'finished: the new settings are saved' : 'undone: the previous settings stay'}`, { code: 'SLUICE_RECOVERED' });
  return done;
}

/** Run fn under the interface's lock, after finishing or undoing a change a crash interrupted. */
function locked<T>(p: Place, fn: () => Promise<T> | T): Promise<T> {
  return withLock(p, () => {
    recoverJournal(p);
    removeStaleTemps(p);
    return fn();
  });
}

/**
 * Temporary files of state writes that a crash cut short (writeFileAtomic: <file>.<pid>.tmp).
 * Every state file of an interface is written under its lock, so none is being written now.
 */
function removeStaleTemps(p: Place): void {
  const path = settingsPath(p);
  const dir = dirname(path);
  if (!existsSync(dir)) return;
  const stem = path.slice(dir.length + 1).replace(/\.json$/, '');
  const re = new RegExp(`^${stem.replace(/[.*+?^${}()|[\]\\%]/g, '\\$&')}\\.(json|journal\\.json|pending\\.json)\\.\\d+\\.tmp$`);
  for (const name of readdirSync(dir)) if (re.test(name)) rmSync(join(dir, name), { force: true });
}

/**
 * Pin obj at path, replacing what is pinned there without a moment with nothing: pinned beside it
 * first, then renamed over it (one rename in bpffs). A crash at any point leaves the old pin or the
 * new one, never none (a missing program pin would make every later `up` fail).
 */
function pinReplacing(obj: { pin(path: string): void }, path: string): void {
  const staged = `${path}_new`; // no dots: bpffs refuses them in names
  rmSync(staged, { force: true });
  obj.pin(staged);
  renameSync(staged, path);
}

/** Remove the scope's directories (pins and settings) once no interface of it is left. */
function removeEmptyScope(p: Place): void {
  for (const d of [dirname(pinDir(p)), dirname(settingsPath(p))]) {
    try {
      if (existsSync(d) && readdirSync(d).length === 0) rmdirSync(d);
    } catch { /* another interface appeared meanwhile */ }
  }
}

/** What Protection.update may change. */
export interface SettingsChange { limits?: Partial<Limits>; rules?: RuleSpec[]; lists?: Lists; malformedDrop?: boolean; geoip?: GeoConfig | null; ruleIds?: Record<string, number>; runtime?: RuntimeLists; newStatesPerSec?: number }

export class Protection {
  private constructor(
    readonly settings: Settings,
    readonly maps: Map<string, BpfMap>,
    readonly limiter: Limiter,
    readonly link: Link,
  ) {}

  get place(): Place {
    return { iface: this.settings.iface, netns: this.settings.netns };
  }

  /** Open an existing protection from its pins. */
  static open(p: Place): Protection {
    checkPrivileges();
    const dir = pinDir(p);
    // A change that a crash interrupted is finished or undone first, unless it is in progress.
    if (existsSync(journalPath(p))) withLockIfFree(p, () => { recoverJournal(p); removeStaleTemps(p); });
    const settings = loadSettings(p);
    if (!existsSync(join(dir, 'link')) || !settings) {
      throw new AgentError(AgentCode.NotProtected, `${where(p)} is not protected by Sluice (start with \`sluice up --iface ${p.iface}${p.netns ? ` --netns ${p.netns}` : ''}\`)`);
    }
    const maps = pinnedMaps(dir);
    try {
      return new Protection(settings, maps, limiterOf(maps), Link.fromPin(join(dir, 'link')));
    } catch (e) {
      for (const m of maps.values()) m.close();
      throw e;
    }
  }

  /** Run fn under the interface's lock (reentrant), after recovering an interrupted change. */
  static locked<T>(p: Place, fn: () => Promise<T> | T): Promise<T> {
    return locked(p, fn);
  }

  /** Load, attach and pin; or adopt (and upgrade) what is pinned. Then apply the settings. */
  static async up(o: UpOptions): Promise<UpResult> {
    checkPrivileges();
    checkBpffs();
    scopeOf(o.netns);
    return locked(o, async () => {
      assertNoPending(o, o.allowPending);
      const ifidx = resolveIfindex(o);
      const dir = pinDir(o);
      const warnings: string[] = [];
      // Settings carry over (limits, rules, lists) even when the pinned state cannot.
      const prior = loadSettings(o);
      let fresh = false;
      if (existsSync(join(dir, 'link')) && prior && prior.ifindex !== ifidx) {
        warnings.push(`${where(o)} was re-created since it was protected (ifindex ${prior.ifindex}, now ${ifidx}): starting afresh`);
        await Protection.teardown(o);
        fresh = true;
      } else if (existsSync(join(dir, 'link')) && prior) {
        // Pins are not proof of protection: the link may hold nothing (detached by hand, or the
        // interface or its namespace re-created with the same ifindex). Adopting that would report
        // a protection that does not run.
        const why = Protection.defunct(o, ifidx);
        if (why) {
          warnings.push(`the pinned link of ${where(o)} does not protect it (${why}; detached by hand, or the interface or its namespace re-created?): attached afresh; limits, rules and lists are kept, per-client state and counters start from zero`);
          await Protection.teardown(o);
          fresh = true;
        }
      }
      if (fresh && prior && (Object.keys(prior.plugins.xdp).length || Object.keys(prior.plugins.tc).length)) {
        warnings.push(`the plugged programs of ${where(o)} went with its old pins: plug them again with \`sluice policy plug\``);
      }
      const lists = o.lists ? await runAsync(normaliseListsSteps(o.lists)) : undefined;
      const base: Omit<Settings, 'mode' | 'ifindex' | 'attachedAt' | 'updatedAt'> = {
        format: 1,
        iface: o.iface,
        netns: o.netns ?? null,
        maxEntries: o.maxEntries ?? prior?.maxEntries ?? DEFAULT_MAX_ENTRIES,
        maxRules: o.maxRules ?? prior?.maxRules ?? DEFAULT_MAX_RULES,
        maxListEntries: o.maxListEntries ?? prior?.maxListEntries ?? DEFAULT_MAX_LIST_ENTRIES,
        object: resolve(o.object ?? prior?.object ?? DEFAULT_OBJECT),
        limits: withLimits({ ...DEFAULT_LIMITS, ...prior?.limits }, o.limits),
        rules: o.rules ?? prior?.rules ?? [],
        lists: lists ?? prior?.lists ?? emptyLists(),
        malformedDrop: o.malformedDrop ?? prior?.malformedDrop ?? false,
        egress: o.egress ?? prior?.egress ?? false,
        geoip: o.geoip !== undefined ? o.geoip : prior?.geoip ?? null,
        ruleIds: o.ruleIds ?? prior?.ruleIds ?? {},
        plugins: (!fresh && prior?.plugins) || { xdp: {}, tc: {} },
        policyFile: o.policyFile !== undefined ? o.policyFile : prior?.policyFile ?? null,
        ...((o.runtime ?? prior?.runtime) ? { runtime: o.runtime ?? prior?.runtime } : {}),
        newStatesPerSec: o.newStatesPerSec ?? prior?.newStatesPerSec ?? 0,
      };
      validateLimits(base.limits);
      compilePolicy(policyOf(base), base.maxRules); // refuse an invalid policy before touching anything
      await checkListsFit(base);

      if (existsSync(join(dir, 'link')) && prior) {
        // --reset-state on a protected interface: fresh maps, the program replaced through the
        // link it runs on, so that the interface stays protected throughout.
        return o.resetState ? Protection.replaceState(o, prior, base, warnings) : Protection.adopt(o, prior, base, warnings);
      }
      if (existsSync(dir)) {
        if (!o.resetState) warnings.push(`found incomplete pins for ${where(o)} (an interrupted command?): removed them`);
        await Protection.teardown(o);
      }
      return Protection.attachFresh(o, ifidx, base, warnings);
    });
  }

  /**
   * Why the pinned link does not protect the interface (ifindex ifidx) now, or undefined when it
   * does: the link must hold this ifindex and the interface must run the link's program.
   */
  private static defunct(p: Place, ifidx: number): string | undefined {
    let link: Link;
    try {
      link = Link.fromPin(join(pinDir(p), 'link'));
    } catch (e) {
      return `its link pin cannot be opened: ${(e as Error).message}`;
    }
    try {
      const info = link.info();
      if (info.ifindex !== ifidx) return info.ifindex === 0 ? `link ${info.id} is detached from every interface` : `link ${info.id} holds ifindex ${info.ifindex}, the interface is ifindex ${ifidx}`;
      const q = xdpQuery(ifidx, { netns: p.netns ?? undefined });
      if (![q.progId, q.nativeProgId, q.genericProgId].includes(info.progId)) {
        const running = q.progId || q.nativeProgId || q.genericProgId;
        return `the interface runs ${running ? `XDP program ${running}` : 'no XDP program'}, not program ${info.progId} of link ${info.id}`;
      }
      return undefined;
    } finally {
      link.close();
    }
  }

  /** Load the object as the settings size it (src/limiter/datapath.ts); its egress program is
   *  loaded (and verified, which takes as long as the XDP program's verification) only when egress
   *  is asked for: no path uses it otherwise. `prepare` sees the spec before the load. */
  private static async load(
    base: Omit<Settings, 'mode' | 'ifindex' | 'attachedAt' | 'updatedAt'>,
    prepare?: DataPathOptions['prepare'],
  ): Promise<Collection> {
    const object = base.object;
    if (!existsSync(object)) throw new AgentError(AgentCode.InvalidArgument, `no BPF object at ${object}: build it with \`make -C bpf\``);
    const sizes = { maxEntries: base.maxEntries, maxRules: base.maxRules, maxListEntries: listMax(base) };
    const dp = await loadDataPath(object, { ...sizes, egress: base.egress, prepare });
    return dp.coll;
  }

  /** The object's map layout, for its ABI stamp; refused if the object and this control plane disagree on the ABI. */
  private static layout(object: string): ObjectLayout {
    if (!existsSync(object)) throw new AgentError(AgentCode.InvalidArgument, `no BPF object at ${object}: build it with \`make -C bpf\``);
    let l: ObjectLayout;
    try {
      l = objectLayout(object);
    } catch (e) {
      throw new AgentError(AgentCode.InvalidArgument, `cannot read the BTF of ${object} to stamp its pins (${(e as Error).message.split('\n')[0]}): it must be a BPF object built with BTF (clang -g), and bpftool must be installed`);
    }
    if (l.abiVersion !== undefined && l.abiVersion !== Abi.VERSION) {
      throw new AgentError(AgentCode.InvalidArgument, `${object} was built from a bpf/sluice.h of ABI version ${l.abiVersion}, this control plane from ABI version ${Abi.VERSION}: build both from one tree (\`make -C bpf && npm run gen:types && npx tsc -p tsconfig.json\`)`);
    }
    return l;
  }

  /** Stamp maps just created from an object (their sl_abi_map), before anything can adopt them. */
  private static stampFresh(maps: Map<string, BpfMap>, l: ObjectLayout, warnings: string[]): void {
    const m = maps.get(ABI_MAP);
    if (m) writeStamp(m, stampOf(l));
    else warnings.push(`${l.object} declares no ${ABI_MAP} (built before pins were stamped): its pins carry no ABI stamp, so a later \`sluice up\` will refuse to adopt them (until --reset-state)`);
  }

  private static async attachFresh(o: UpOptions, ifidx: number, base: Omit<Settings, 'mode' | 'ifindex' | 'attachedAt' | 'updatedAt'>, warnings: string[]): Promise<UpResult> {
    const q = xdpQuery(ifidx, { netns: o.netns ?? undefined });
    if (q.mode !== 'none') {
      const id = q.progId || q.nativeProgId || q.genericProgId || q.offloadProgId;
      let name = '?';
      try { const prog = Program.fromId(id); name = prog.info().name; prog.close(); } catch { /* gone meanwhile */ }
      throw new AgentError(AgentCode.XdpBusy, `${where(o)} already has an XDP program (id ${id}, name ${name}, ${q.mode} mode) that Sluice did not attach; Sluice will not replace it. Remove it first (for example \`ip${o.netns ? ` -n ${o.netns}` : ''} link set dev ${o.iface} xdp off\`), then run up again`);
    }
    const layout = Protection.layout(base.object);
    let coll: Collection | undefined;
    let link: Link | undefined;
    const dir = pinDir(o);
    try {
      coll = await Protection.load(base);
      Protection.stampFresh(coll.maps, layout, warnings);
      const settings: Settings = { ...base, mode: 'native', ifindex: ifidx, mapLayouts: layout.digests, attachedAt: new Date().toISOString(), updatedAt: '' };
      const limiter = limiterOf(coll.maps);
      await applyAll(limiter, settings); // the policy is in place before the first packet meets the program
      const prog = coll.programs.get(PROGRAM)!;
      const want = o.mode ?? 'auto';
      if (want === 'generic') {
        link = Link.attachXdp(prog, ifidx, { mode: 'generic', netns: o.netns ?? undefined });
        settings.mode = 'generic';
      } else {
        try {
          link = Link.attachXdp(prog, ifidx, { mode: 'native', netns: o.netns ?? undefined });
        } catch (e) {
          if (want === 'native') {
            throw new AgentError(AgentCode.NativeUnsupported, `native XDP could not be attached to ${where(o)}: ${(e as Error).message}. Use --mode generic (slower, works on any interface) or --mode auto`);
          }
          warnings.push(`native XDP is not available on ${where(o)} (${(e as Error).message}): attached in generic mode, which is slower`);
          link = Link.attachXdp(prog, ifidx, { mode: 'generic', netns: o.netns ?? undefined });
          settings.mode = 'generic';
        }
      }
      mkdirSync(join(dir, 'maps'), { recursive: true });
      for (const [name, map] of coll.maps) if (!name.includes('.')) map.pin(join(dir, 'maps', name));
      prog.pin(join(dir, 'prog'));
      link.pin(join(dir, 'link'));
      if (settings.egress) Protection.attachEgress(o, coll.programs.get(TC_PROGRAM)!, dir);
      saveSettings(settings);
      link.close();
      coll.close();
      return { action: 'attached', warnings, protection: Protection.open(o) };
    } catch (e) {
      // Leave the interface as it was: no link, no filter, no pins, no settings.
      try { link?.detach(); } catch { /* not attached */ }
      Protection.detachEgress(o);
      link?.close();
      coll?.close();
      rmSync(dir, { recursive: true, force: true });
      removeSettings(o);
      removeEmptyScope(o);
      throw e;
    }
  }

  private static async adopt(o: UpOptions, prior: Settings, base: Omit<Settings, 'mode' | 'ifindex' | 'attachedAt' | 'updatedAt'>, warnings: string[]): Promise<UpResult> {
    const dir = pinDir(o);
    if (o.mode && o.mode !== 'auto' && o.mode !== prior.mode) {
      throw new AgentError(AgentCode.ModeChange, `${where(o)} is protected in ${prior.mode} mode; a link cannot change mode in place. Run \`sluice down\` then \`sluice up --mode ${o.mode}\` (traffic is unprotected in between)`);
    }
    const layout = Protection.layout(base.object);
    const maps = pinnedMaps(dir);
    const repinned = repinRunningMaps(dir, maps);
    if (repinned.length) warnings.push(`the pins of ${repinned.join(', ')} were missing (removed by hand?): pinned again from the program that runs, state and counters kept`);
    let coll: Collection | undefined;
    try {
      // The state must be what this object's program reads, word for word: checked by the ABI
      // stamp before anything is loaded or changed. A refusal leaves the running program attached.
      const stampMap = maps.get(ABI_MAP);
      const pinnedStamp = stampMap ? readStamp(stampMap) ?? null : undefined;
      const check = checkStamp(pinnedStamp, [...maps.keys()], prior.mapLayouts, layout);
      if (check.problem !== undefined) {
        const flags = `--iface ${o.iface}${o.netns ? ` --netns ${o.netns}` : ''}`;
        throw new AgentError(AgentCode.PinsAbiMismatch, `the state pinned for ${where(o)} does not carry the ABI stamp of ${base.object}, so it will not be adopted (its program could read it differently): ${check.problem}. The program that runs there stays attached and keeps enforcing. To load this object, start with fresh state (per-client state and counters are lost; limits, rules and lists are kept, the interface stays protected): \`sluice up ${flags} --reset-state\`${prior.object !== base.object ? `; or keep the object the pins were made with (\`--object ${prior.object}\`)` : ''}`);
      }
      // Everything the new object declares must fit what is pinned, or state cannot be kept.
      coll = await Protection.load(base, (spec) => {
        const problems: string[] = [];
        for (const m of spec.maps) {
          if (m.name.includes('.')) continue; // .rodata and friends are per program
          const pinned = maps.get(m.name);
          if (!pinned) continue; // a map new in this object starts empty
          const sized = RULE_SIZED_MAPS[m.name];
          const want = (STATE_MAP_NAMES as readonly string[]).includes(m.name) ? base.maxEntries : m.name === 'sl_lists' ? 2 * listMax(base) : sized ? sized(base.maxRules) : m.maxEntries;
          if (pinned.type !== m.type || pinned.keySize !== m.keySize || pinned.valueSize !== m.valueSize) {
            problems.push(`${m.name}: pinned key/value ${pinned.keySize}/${pinned.valueSize} bytes, the object needs ${m.keySize}/${m.valueSize}`);
          } else if (pinned.maxEntries !== want) {
            problems.push(`${m.name}: pinned with ${pinned.maxEntries} entries, asked for ${want}`);
          }
          spec.reuseMap(m.name, pinned);
        }
        if (problems.length) {
          throw new AgentError(AgentCode.StateIncompatible, `the state pinned for ${where(o)} cannot be reused: ${problems.join('; ')}. Keep the old sizes, or start with fresh state (counters and per-client state are lost) using \`sluice up --reset-state\``);
        }
      });
      const link = Link.fromPin(join(dir, 'link'));
      // A command interrupted before this fix could leave no program pin: then the link's program is re-pinned.
      const pinnedProg = existsSync(join(dir, 'prog')) ? Program.fromPin(join(dir, 'prog')) : undefined;
      if (!pinnedProg) warnings.push(`the program pin of ${where(o)} was missing (an interrupted command?): the program is replaced through the link and pinned again`);
      const newProg = coll.programs.get(PROGRAM)!;
      let action: UpResult['action'] = 'adopted';
      try {
        if (!pinnedProg || pinnedProg.info().tag !== newProg.info().tag || link.info().progId !== pinnedProg.info().id) {
          link.update(newProg); // atomic: the interface is never without a program
          pinReplacing(newProg, join(dir, 'prog'));
          action = 'upgraded';
        }
        // Maps new in this object are pinned alongside the adopted ones, and the stamp covers them.
        for (const [name, map] of coll.maps) if (!name.includes('.') && !maps.has(name)) map.pin(join(dir, 'maps', name));
        const stamp = { layoutHash: layoutHashOf(check.digests), abiVersion: pinnedStamp!.abiVersion };
        if (stamp.layoutHash !== pinnedStamp!.layoutHash) writeStamp(stampMap!, stamp);
        // Egress: attach, replace in place (same handle and priority), or remove, as asked.
        if (base.egress) {
          const tcProg = coll.programs.get(TC_PROGRAM)!;
          const pinned = existsSync(join(dir, 'tc_prog')) ? Program.fromPin(join(dir, 'tc_prog')) : undefined;
          const same = pinned && pinned.info().tag === tcProg.info().tag && tcQuery(prior.ifindex, 'egress', { ...TC_FILTER, netns: o.netns ?? undefined })?.progId === pinned.info().id;
          pinned?.close();
          if (!same) Protection.attachEgress(o, tcProg, dir);
        } else if (prior.egress) {
          Protection.detachEgress(o);
        }
      } finally {
        pinnedProg?.close();
        link.close();
      }
      const settings: Settings = { ...prior, ...base, mode: prior.mode, ifindex: prior.ifindex, mapLayouts: check.digests, attachedAt: prior.attachedAt, updatedAt: '' };
      const live = pinnedMaps(dir);
      try {
        await commit(o, limiterOf(live), prior, settings);
      } finally {
        for (const m of live.values()) m.close();
      }
      return { action, warnings, protection: Protection.open(o) };
    } finally {
      coll?.close();
      for (const m of maps.values()) m.close();
    }
  }

  /**
   * Start afresh on a protected interface (--reset-state) without a moment unprotected: load the
   * object with new maps, write the policy and the stamp into them, replace the program through
   * the pinned link (atomic), then replace the pins. Used whatever the pinned stamp says, so it is
   * also the way out of SLUICE_E_PINS_ABI_MISMATCH. A failure before the link update changes
   * nothing; a crash after it leaves the old pins, which the next up adopts or refuses.
   */
  private static async replaceState(o: UpOptions, prior: Settings, base: Omit<Settings, 'mode' | 'ifindex' | 'attachedAt' | 'updatedAt'>, warnings: string[]): Promise<UpResult> {
    const dir = pinDir(o);
    if (o.mode && o.mode !== 'auto' && o.mode !== prior.mode) {
      throw new AgentError(AgentCode.ModeChange, `${where(o)} is protected in ${prior.mode} mode; a link cannot change mode in place, not even with --reset-state. Run \`sluice down\` then \`sluice up --mode ${o.mode}\` (traffic is unprotected in between)`);
    }
    const layout = Protection.layout(base.object);
    const staged = join(dir, 'maps_new'); // no dots: bpffs refuses them in names
    const old = join(dir, 'maps_old');
    let coll: Collection | undefined;
    try {
      coll = await Protection.load(base);
      const plugins = { xdp: { ...base.plugins.xdp }, tc: { ...base.plugins.tc } };
      const settings: Settings = { ...prior, ...base, plugins, mode: prior.mode, ifindex: prior.ifindex, mapLayouts: layout.digests, attachedAt: new Date().toISOString(), updatedAt: '' };
      await applyAll(limiterOf(coll.maps), settings); // the policy is in place before the first packet meets the program
      Protection.stampFresh(coll.maps, layout, warnings);
      Protection.carryPlugins(dir, coll.maps, settings, warnings);
      rmSync(staged, { recursive: true, force: true });
      rmSync(old, { recursive: true, force: true });
      mkdirSync(staged, { recursive: true });
      for (const [name, map] of coll.maps) if (!name.includes('.')) map.pin(join(staged, name));
      const prog = coll.programs.get(PROGRAM)!;
      const link = Link.fromPin(join(dir, 'link'));
      try {
        link.update(prog); // atomic: the interface is never without a program
      } finally {
        link.close();
      }
      // From here the new program runs on the new maps; the pins follow.
      pinReplacing(prog, join(dir, 'prog'));
      if (base.egress) Protection.attachEgress(o, coll.programs.get(TC_PROGRAM)!, dir);
      else if (prior.egress) Protection.detachEgress(o);
      if (existsSync(join(dir, 'maps'))) renameSync(join(dir, 'maps'), old);
      renameSync(staged, join(dir, 'maps'));
      rmSync(old, { recursive: true, force: true });
      saveSettings(settings);
      // 'attached': fresh state, as a first attach has (the link and its id stay).
      return { action: 'attached', warnings, protection: Protection.open(o) };
    } catch (e) {
      try { rmSync(staged, { recursive: true, force: true }); } catch { /* the error that matters is e */ }
      throw e;
    } finally {
      coll?.close();
    }
  }

  /** Plugged programs (pinned under plugins/) go into the new program arrays, before the switch. */
  private static carryPlugins(dir: string, maps: Map<string, BpfMap>, settings: Settings, warnings: string[]): void {
    for (const hook of ['xdp', 'tc'] as const) {
      for (const slot of Object.keys(settings.plugins[hook])) {
        const path = join(dir, 'plugins', `${hook}_${slot}`);
        try {
          const prog = Program.fromPin(path);
          try {
            const key = Buffer.alloc(4);
            key.writeUInt32LE(Number(slot));
            const val = Buffer.alloc(4);
            val.writeUInt32LE(prog.fd);
            mapOf(maps, PLUGIN_MAPS[hook])!.update(key, val);
          } finally {
            prog.close();
          }
        } catch (e) {
          warnings.push(`the ${hook} plugin in slot ${slot} could not be carried over to the fresh state (${(e as Error).message}): its rules use the built-in limiter; plug it again with \`sluice policy plug\``);
          delete settings.plugins[hook][slot];
          rmSync(path, { force: true });
        }
      }
    }
  }

  /** Detach and unpin. Idempotent: false when there was nothing to take down. */
  static async down(p: Place): Promise<boolean> {
    checkPrivileges();
    return locked(p, () => Protection.teardown(p));
  }

  private static async teardown(p: Place): Promise<boolean> {
    const dir = pinDir(p);
    const had = existsSync(dir) || existsSync(settingsPath(p));
    if (existsSync(join(dir, 'link'))) {
      const link = Link.fromPin(join(dir, 'link'));
      try {
        link.detach();
      } catch (e) {
        // A link whose interface is gone is already detached.
        if (!(e instanceof BpfError)) throw e;
      } finally {
        link.close();
      }
    }
    Protection.detachEgress(p);
    rmSync(dir, { recursive: true, force: true });
    removeSettings(p);
    // Nothing is left to roll back: a watcher that wakes finds no pending file and ends.
    rmSync(pendingPath(p), { force: true });
    removeEmptyScope(p);
    return had;
  }

  /**
   * Attach (or replace in place) the egress filter. The clsact qdisc is created if missing and never
   * removed: other tools' filters may hang off it.
   */
  private static attachEgress(p: Place, prog: Program, dir: string): void {
    const netns = p.netns ?? undefined;
    tcHookCreate(p.iface, 'egress', { netns });
    tcAttach(p.iface, 'egress', prog, { ...TC_FILTER, replace: true, netns });
    pinReplacing(prog, join(dir, 'tc_prog'));
  }

  /** Remove Sluice's egress filter, if any; the qdisc and other filters stay. */
  private static detachEgress(p: Place): void {
    try {
      if (tcQuery(p.iface, 'egress', { ...TC_FILTER, netns: p.netns ?? undefined })) tcDetach(p.iface, 'egress', { ...TC_FILTER, netns: p.netns ?? undefined });
    } catch {
      // No clsact qdisc, or the interface is gone: nothing to remove.
    }
    rmSync(join(pinDir(p), 'tc_prog'), { force: true });
  }

  /**
   * Load an operator's program and plug it into a slot: rules with that plugin slot hand their
   * packets to it (tail call) instead of the built-in limiter. It must be an XDP program for the
   * xdp hook, a SCHED_CLS (tc) program for the tc hook.
   */
  async plug(hook: Hook, slot: number, object: string, program: string): Promise<void> {
    if (!existsSync(object)) throw new AgentError(AgentCode.InvalidArgument, `no BPF object at ${object}`);
    await locked(this.place, async () => {
      this.reload();
      assertNoPending(this.place);
      this.assertStamp();
      let prog: Program;
      try {
        prog = await plugProgram(mapOf(this.maps, PLUGIN_MAPS[hook])!, hook, slot, object, program);
      } catch (e) {
        if (e instanceof RangeError || !(e instanceof BpfError)) throw new AgentError(AgentCode.InvalidArgument, (e as Error).message);
        throw e;
      }
      try {
        const pinPath = join(pinDir(this.place), 'plugins', `${hook}_${slot}`);
        mkdirSync(dirname(pinPath), { recursive: true });
        rmSync(pinPath, { force: true });
        prog.pin(pinPath);
      } finally {
        prog.close();
      }
      this.settings.plugins[hook][String(slot)] = { object: resolve(object), program };
      saveSettings(this.settings);
    });
  }

  /** Empty a plugin slot: its rules go back to the built-in limiter. Idempotent. */
  async unplug(hook: Hook, slot: number): Promise<boolean> {
    return locked(this.place, () => {
      this.reload();
      assertNoPending(this.place);
      const had = unplugProgram(mapOf(this.maps, PLUGIN_MAPS[hook])!, slot);
      rmSync(join(pinDir(this.place), 'plugins', `${hook}_${slot}`), { force: true });
      delete this.settings.plugins[hook][String(slot)];
      saveSettings(this.settings);
      return had;
    });
  }

  /**
   * Nothing is written into pinned state whose stamp is not the one `up` adopted for this control
   * plane (its ABI version, and the layouts recorded with the settings): a control plane upgraded
   * under running pins would otherwise write its encoding into maps another build reads.
   */
  private assertStamp(): void {
    const m = this.maps.get(ABI_MAP);
    const s = m ? readStamp(m) : undefined;
    const recorded = this.settings.mapLayouts;
    if (s && s.abiVersion === Abi.VERSION && recorded && layoutHashOf(recorded) === s.layoutHash) return;
    const p = this.place;
    const flags = `--iface ${p.iface}${p.netns ? ` --netns ${p.netns}` : ''}`;
    throw new AgentError(AgentCode.PinsAbiMismatch, `the state pinned for ${where(p)} does not carry the ABI stamp this control plane adopted (the pins have ${s ? describeStamp(s) : 'no stamp'}; this control plane ${recorded ? `adopted ${describeStamp({ layoutHash: layoutHashOf(recorded), abiVersion: Abi.VERSION })}` : `has ABI version ${Abi.VERSION} and recorded no layouts for them`}), so nothing is written into it. The program that runs there stays attached and keeps enforcing. Run \`sluice up ${flags}\` to adopt it, or add --reset-state to start with fresh state`);
  }

  /** The settings as saved now (under the lock: what a read-modify-write must start from). */
  private reload(): void {
    const cur = loadSettings(this.place);
    if (!cur) throw new AgentError(AgentCode.NotProtected, `${where(this.place)} was taken down meanwhile (start with \`sluice up --iface ${this.place.iface}${this.place.netns ? ` --netns ${this.place.netns}` : ''}\`)`);
    for (const k of Object.keys(this.settings)) if (!(k in cur)) delete (this.settings as unknown as Record<string, unknown>)[k];
    Object.assign(this.settings, cur);
  }

  /**
   * Change settings live: compiled and checked first, then one transaction (commit: journal, one
   * policy flip, settings saved). The change is computed under the lock from the settings as they
   * are then (a function of them, for edits such as "add this prefix"), so that concurrent edits
   * never lose one another. Refused while a rollback is pending (SLUICE_E_PENDING).
   */
  async update(change: SettingsChange | ((current: Settings) => SettingsChange)): Promise<Settings> {
    return locked(this.place, async () => {
      this.reload();
      assertNoPending(this.place);
      this.assertStamp();
      if (typeof change === 'function') change = change(this.settings);
      // In slices, as the write below: 100,000 prefixes are parsed without holding the event loop.
      const lists = change.lists ? await runAsync(normaliseListsSteps(change.lists)) : undefined;
      const next: Settings = {
        ...this.settings,
        limits: withLimits(this.settings.limits, change.limits),
        rules: change.rules ?? this.settings.rules,
        lists: lists ?? this.settings.lists,
        malformedDrop: change.malformedDrop ?? this.settings.malformedDrop,
        geoip: change.geoip !== undefined ? change.geoip : this.settings.geoip,
        ruleIds: change.ruleIds ?? this.settings.ruleIds,
        ...((change.runtime ?? this.settings.runtime) ? { runtime: change.runtime ?? this.settings.runtime } : {}),
        newStatesPerSec: change.newStatesPerSec ?? this.settings.newStatesPerSec ?? 0,
      };
      validateLimits(next.limits);
      compilePolicy(policyOf(next), next.maxRules);
      await checkListsFit(next);
      await commit(this.place, this.limiter, this.settings, next);
      Object.assign(this.settings, next);
      return next;
    });
  }

  /** Rule ids and names of the live policy. */
  ruleNames(): Map<number, string | undefined> {
    return new Map(policyOf(this.settings).rules.map((r) => [r.id, r.name]));
  }

  programInfo(): { id: number; tag: string; verifiedInsns: number } {
    const prog = Program.fromId(this.link.info().progId);
    try {
      const i = prog.info();
      return { id: i.id, tag: i.tag, verifiedInsns: i.verifiedInsns };
    } finally {
      prog.close();
    }
  }

  close(): void {
    for (const m of this.maps.values()) m.close();
    this.link.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
