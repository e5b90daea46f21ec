// Network namespaces, veth pairs and leftover checks for end-to-end tests.
//
// Safety rules this file keeps:
//  - every object it creates carries the run id in its name (runId());
//  - veths are created directly inside their namespaces (`ip link add A netns NS1 type veth peer
//    name B netns NS2`), so nothing ever exists in the host namespace, not even for a moment;
//  - namespaces get no default route, so nothing sent inside can leave;
//  - cleanup() removes everything it created, is idempotent, and also runs from a process 'exit'
//    hook and on SIGINT/SIGTERM as a last resort. Callers still register it with node:test's
//    `after()` (or use `await using`, or withTestbed()).
import { execFileSync, spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import {
  addNetns,
  configureEnd,
  createVeth,
  deleteNetns,
  initNetns,
  listNetns,
  nsExec,
  run,
  waitLinkReady,
  type ExecOpts,
  type ExecResult,
} from './netns';

// The namespace mechanics live in ./netns.ts (the lab uses them too); users of the testbed get them here.
export { ExecError, nsExec, run, type ExecOpts, type ExecResult } from './netns';

// ---------------------------------------------------------------------------------------------
// Run id

const RUN_ID_RE = /^[a-z][a-z0-9]{3,9}$/;
let cachedRunId: string | undefined;

/**
 * A short id for this test run, embedded in every object name a test creates: `sl` + 6 random base36
 * characters, fixed for the process. `SLUICE_TEST_RUN_ID` overrides it (lower-case letter, then 3..9
 * lower-case letters or digits, so that interface names stay within 15 characters).
 */
export function runId(): string {
  if (cachedRunId !== undefined) return cachedRunId;
  const env = process.env['SLUICE_TEST_RUN_ID'];
  if (env !== undefined && env !== '') {
    if (!RUN_ID_RE.test(env)) {
      throw new Error(`SLUICE_TEST_RUN_ID=${JSON.stringify(env)} must match ${RUN_ID_RE} (interface names are at most 15 chars)`);
    }
    cachedRunId = env;
  } else {
    let s = '';
    while (s.length < 6) s += randomBytes(8).readBigUInt64BE().toString(36).slice(-6);
    cachedRunId = `sl${s.slice(0, 6)}`;
  }
  return cachedRunId;
}

/** Kernel object names (programs, maps) hold 15 characters: `<runid><base>` cut to 15, so the id
 *  itself always survives. */
export function bpfObjName(base: string): string {
  return `${runId()}${base}`.slice(0, 15);
}

// ---------------------------------------------------------------------------------------------
// Testbed

export interface VethEnd {
  ns: string;
  ifname: string;
  mac: string;
  ipv4: string;
  ipv6: string;
  /** Prefix lengths of the addresses above. */
  prefix4: number;
  prefix6: number;
}

export interface Veth {
  a: VethEnd;
  b: VethEnd;
}

export interface VethOpts {
  /** Queue counts for both ends (XDP tests on multi-queue veths). */
  numRxQueues?: number;
  numTxQueues?: number;
  /** Default 10.77.<n>.1/24 and .2/24, fd00:77:<n>::1/64 and ::2/64 (n = veth index). */
  ipv4?: [string, string];
  ipv6?: [string, string];
  prefix4?: number;
  prefix6?: number;
  /** Default 02:5c:<run-unique>:0a / :0b. */
  mac?: [string, string];
  mtu?: number;
  /** Skip addresses entirely (e.g. for L2-only tests). */
  noAddresses?: boolean;
}

export interface TestbedOpts {
  /** Id embedded in names; default runId(). */
  id?: string;
}

const live = new Set<Testbed>();
let hooksInstalled = false;
let vethCounter = 0;
let testbedCounter = 0;

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const tb of live) tb.cleanupSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      for (const tb of live) tb.cleanupSync();
      // Then die of the same signal, as if we had never listened.
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/**
 * A set of network namespaces and veth pairs owned by one test (file). Names:
 *   namespace  `<id>-<pid36><n>-<name>`   (pid keeps parallel test processes that share an id apart)
 *   interface  `v<id><k>a` / `v<id><k>b`  (k: 2 base36 chars, unique in the process; <= 15 chars)
 */
export class Testbed {
  readonly id: string;
  /** Every namespace name of this testbed starts with this. */
  readonly prefix: string;
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private closed = false;

  constructor(o: TestbedOpts = {}) {
    this.id = o.id ?? runId();
    if (!RUN_ID_RE.test(this.id)) throw new Error(`testbed id ${JSON.stringify(this.id)} must match ${RUN_ID_RE}`);
    this.prefix = `${this.id}-${process.pid.toString(36)}${(testbedCounter++).toString(36)}-`;
    installHooks();
    live.add(this);
  }

  /** Creates namespace `<prefix><name>` with loopback up, IPv6 DAD off, and returns its full name. */
  async addNs(name: string): Promise<string> {
    this.assertOpen();
    if (!/^[a-z0-9_]{1,24}$/.test(name)) throw new Error(`namespace short name ${JSON.stringify(name)} must match [a-z0-9_]{1,24}`);
    const ns = this.prefix + name;
    if (this.namespaces.includes(ns)) throw new Error(`namespace ${ns} already exists in this testbed`);
    // Recorded before creation so that a signal arriving while `ip` runs still cleans it up; but
    // forgotten again if creation fails, so we never delete a namespace that is not ours.
    this.namespaces.push(ns);
    try {
      await addNetns(ns);
    } catch (e) {
      this.namespaces.splice(this.namespaces.indexOf(ns), 1);
      throw e;
    }
    await initNetns(ns);
    return ns;
  }

  /** The namespaces created so far (full names). */
  get nsNames(): readonly string[] {
    return [...this.namespaces];
  }

  /** A veth pair with end `a` in nsA and end `b` in nsB (full names from addNs), up, with
   *  addresses. No route beyond the /24 and /64 on-link prefixes is added. */
  async addVeth(nsA: string, nsB: string, o: VethOpts = {}): Promise<Veth> {
    this.assertOpen();
    for (const ns of [nsA, nsB]) {
      if (!this.namespaces.includes(ns)) throw new Error(`${ns} is not a namespace of this testbed; pass a name returned by addNs()`);
    }
    if (nsA === nsB) throw new Error('both veth ends in one namespace is not supported (would need distinct routing)');
    const k = vethCounter++;
    if (k >= 36 * 36) throw new Error('too many veths in one process');
    const tag = k.toString(36).padStart(2, '0');
    const ifA = `v${this.id}${tag}a`;
    const ifB = `v${this.id}${tag}b`;
    const hi = (k >> 8) & 0xff;
    const lo = k & 0xff;
    const hex = (n: number): string => n.toString(16).padStart(2, '0');
    const pidByte = hex(process.pid & 0xff);
    const [macA, macB] = o.mac ?? [`02:5c:${pidByte}:${hex(hi)}:${hex(lo)}:0a`, `02:5c:${pidByte}:${hex(hi)}:${hex(lo)}:0b`];
    const sub = k % 250;
    const [v4a, v4b] = o.ipv4 ?? [`10.77.${sub}.1`, `10.77.${sub}.2`];
    const [v6a, v6b] = o.ipv6 ?? [`fd00:77:${k.toString(16)}::1`, `fd00:77:${k.toString(16)}::2`];
    const p4 = o.prefix4 ?? 24;
    const p6 = o.prefix6 ?? 64;

    const q = { numRxQueues: o.numRxQueues, numTxQueues: o.numTxQueues, mtu: o.mtu };
    await createVeth({ ns: nsA, ifname: ifA, mac: macA, ...q }, { ns: nsB, ifname: ifB, mac: macB, ...q });
    for (const [ns, ifname, ipv4, ipv6] of [[nsA, ifA, v4a, v6a], [nsB, ifB, v4b, v6b]] as const) {
      await configureEnd(ns, ifname, o.noAddresses ? undefined : { ipv4, prefix4: p4, ipv6, prefix6: p6 });
    }
    await waitLinkReady(nsA, ifA);
    await waitLinkReady(nsB, ifB);
    return {
      a: { ns: nsA, ifname: ifA, mac: macA, ipv4: v4a, ipv6: v6a, prefix4: p4, prefix6: p6 },
      b: { ns: nsB, ifname: ifB, mac: macB, ipv4: v4b, ipv6: v6b, prefix4: p4, prefix6: p6 },
    };
  }

  /** Runs a command inside one of this testbed's namespaces. */
  exec(ns: string, cmd: string, args: readonly string[] = [], o: ExecOpts = {}): Promise<ExecResult> {
    this.assertOpen();
    if (!this.namespaces.includes(ns)) throw new Error(`${ns} is not a namespace of this testbed`);
    return nsExec(ns, cmd, args, o);
  }

  /** Starts a long-running command inside a namespace; it is killed (SIGKILL) by cleanup(). */
  spawn(ns: string, cmd: string, args: readonly string[] = []): ChildProcess {
    this.assertOpen();
    if (!this.namespaces.includes(ns)) throw new Error(`${ns} is not a namespace of this testbed`);
    // `ip netns exec` execs the command after setns, so the child's pid is the command's pid.
    const child = spawnChild('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Kills spawned children and deletes every namespace this testbed created (which removes the
   *  veths in them). Idempotent; safe to call from several places. */
  async cleanup(): Promise<void> {
    const errors: string[] = [];
    for (const child of [...this.children]) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGKILL');
        await exited;
      }
      this.children.delete(child);
    }
    while (this.namespaces.length > 0) {
      const ns = this.namespaces[this.namespaces.length - 1]!;
      const r = await deleteNetns(ns);
      if (!r.gone) errors.push(`ip netns del ${ns}: ${r.stderr}`);
      this.namespaces.pop();
    }
    this.closed = true;
    live.delete(this);
    if (errors.length > 0) throw new Error(`testbed cleanup failed:\n${errors.join('\n')}`);
  }

  /** Synchronous cleanup for the process 'exit' hook and signal handlers. */
  cleanupSync(): void {
    for (const child of this.children) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    this.children.clear();
    while (this.namespaces.length > 0) {
      const ns = this.namespaces.pop()!;
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
      } catch {
        /* best effort: assertNoLeftovers() will report it */
      }
    }
    this.closed = true;
    live.delete(this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cleanup();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('testbed already cleaned up');
  }
}

/** Runs `fn` with a fresh testbed and cleans it up afterwards, whether `fn` returns or throws. */
export async function withTestbed<T>(fn: (tb: Testbed) => Promise<T>, o: TestbedOpts = {}): Promise<T> {
  const tb = new Testbed(o);
  try {
    return await fn(tb);
  } finally {
    await tb.cleanup();
  }
}

// ---------------------------------------------------------------------------------------------
// Leftovers

export interface Leftover {
  kind: 'netns' | 'link' | 'bpffs' | 'prog' | 'map';
  name: string;
  detail?: string;
}

export interface LeftoverOpts {
  /** Keep polling until nothing is left or this much time has passed (namespace teardown and the
   *  freeing of programs attached inside it are asynchronous in the kernel). Default 0. */
  waitMs?: number;
  /** Root of the BPF filesystem to search; default /sys/fs/bpf. */
  bpffs?: string;
  /** Leftovers to disregard (same kind and name), e.g. what an earlier test file sharing the run id
   *  left, taken with listLeftovers() before this one started. */
  except?: readonly Leftover[];
}

/** Shortest tail of the id accepted in a truncated (15-char) BPF object name. */
const MIN_ID_PREFIX = 5;
const BPF_OBJ_NAME_MAX = 15;

/**
 * Does a kernel object name belong to run `id`? It does if it contains the id, or if it was cut at
 * the 15-character limit and ends with a prefix (>= 5 chars) of the id, as in `sluice_rl_sl3k9`.
 */
export function bpfNameMatches(name: string, id: string): boolean {
  if (name.includes(id)) return true;
  if (name.length < BPF_OBJ_NAME_MAX) return false;
  for (let n = id.length - 1; n >= MIN_ID_PREFIX; n--) {
    if (name.endsWith(id.slice(0, n))) return true;
  }
  return false;
}

function walkBpffs(root: string, id: string, out: Leftover[]): void {
  if (!existsSync(root)) return;
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      continue;
    }
    for (const e of entries) {
      const p = join(dir, e);
      if (e.includes(id)) out.push({ kind: 'bpffs', name: p });
      try {
        if (lstatSync(p).isDirectory()) stack.push(p);
      } catch {
        /* raced with removal */
      }
    }
  }
}

async function bpftoolList(what: 'prog' | 'map'): Promise<Array<{ id: number; name?: string; type?: string }>> {
  let r: ExecResult;
  try {
    r = await run('bpftool', ['-j', what, 'show'], { check: true });
  } catch (e) {
    throw new Error(`cannot list BPF ${what}s with bpftool (needed for the leftover check): ${(e as Error).message}`);
  }
  const text = r.stdout.trim();
  return text === '' ? [] : (JSON.parse(text) as Array<{ id: number; name?: string; type?: string }>);
}

async function collectLeftovers(id: string, bpffs: string): Promise<Leftover[]> {
  const out: Leftover[] = [];
  for (const ns of await listNetns()) if (ns.includes(id)) out.push({ kind: 'netns', name: ns });
  const links = await run('ip', ['-o', 'link', 'show'], { check: true });
  for (const line of links.stdout.split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && m[1]!.includes(id)) out.push({ kind: 'link', name: m[1]!, detail: 'in the host namespace' });
  }
  walkBpffs(bpffs, id, out);
  for (const what of ['prog', 'map'] as const) {
    for (const o of await bpftoolList(what)) {
      if (o.name !== undefined && bpfNameMatches(o.name, id)) {
        out.push({ kind: what, name: o.name, detail: `id ${o.id}${o.type ? `, type ${o.type}` : ''}` });
      }
    }
  }
  return out;
}

/**
 * Everything still around whose name carries `id`: namespaces (`ip netns list`), host links
 * (`ip -o link`), paths under the BPF filesystem (recursive), loaded programs and maps (bpftool;
 * see bpfNameMatches for truncated names). Empty when clean.
 */
export async function listLeftovers(id: string = runId(), o: LeftoverOpts = {}): Promise<Leftover[]> {
  if (id.length < 4) throw new Error(`id ${JSON.stringify(id)} is too short to match on safely`);
  const deadline = Date.now() + (o.waitMs ?? 0);
  for (;;) {
    const skip = new Set((o.except ?? []).map((l) => `${l.kind}\0${l.name}`));
    const found = (await collectLeftovers(id, o.bpffs ?? '/sys/fs/bpf')).filter((l) => !skip.has(`${l.kind}\0${l.name}`));
    if (found.length === 0 || Date.now() >= deadline) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Throws with the list of leftovers unless there are none. */
export async function assertNoLeftovers(id: string = runId(), o: LeftoverOpts = {}): Promise<void> {
  const found = await listLeftovers(id, o);
  if (found.length > 0) {
    const lines = found.map((l) => `  ${l.kind} ${l.name}${l.detail ? ` (${l.detail})` : ''}`);
    throw new Error(`leftovers for run ${id}:\n${lines.join('\n')}`);
  }
}
