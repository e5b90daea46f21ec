/**
 * The fault-injection suite's machinery (issue 11): a case's own mount namespace with a private
 * bpffs and a small tmpfs for state, `sluice` run inside it, seeded kill points, the receiver's
 * count sampled while a paced flood runs, and the end state read through the pinned maps.
 *
 * Safety: the interface lives in a lab namespace made by this suite (src/lab: no route out, named
 * after the run id); the CLI runs in the host network namespace with --netns, inside a mount
 * namespace whose bpffs and tmpfs nobody else sees (propagation "slave": the host's new
 * /run/netns entries reach it, its own mounts never leave it). The pin root and the state root of
 * every command point into that namespace, so no case can touch another run's pins or the host's
 * /sys/fs/bpf/sluice. Closing a case kills every process still in its mount namespace (only ours:
 * the holder, a daemon, a rollback watcher), after which the bpffs goes and its pins with it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { countSite, readCount, type LabLayout } from '../../src/lab';
import { REPO } from '../lib/datapath';
import type { Snapshot } from './probe';

export const BIN = join(REPO, 'bin', 'sluice.js');
export const PROBE = join(REPO, 'dist', 'test', 'reliability', 'probe.js');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// Seeded randomness: the seed is printed, --seed replays a run.
export { rng } from '../lib/rng';

// ---------------------------------------------------------------------------------------------
// A case's mount namespace

export interface Exit { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }

export interface Spawned {
  child: ChildProcess;
  exited: Promise<Exit>;
  stdout(): string;
}

export class CaseNs {
  private constructor(
    readonly root: string,
    readonly holder: ChildProcess,
    readonly mntNs: string,
  ) {}

  get pid(): number { return this.holder.pid!; }
  get pinRoot(): string { return join(this.root, 'bpf', 'sluice'); }
  get stateDir(): string { return join(this.root, 'state'); }
  /** A path of this namespace as the host sees it (for files the suite writes: configs, policies). */
  get filesDir(): string { return join(this.root, 'files'); }

  /** A holder process (`unshare -m … sleep infinity`) with a private bpffs and a tmpfs of tmpfsKb. */
  static async open(name: string, o: { tmpfsKb?: number } = {}): Promise<CaseNs> {
    const root = `/tmp/sluice-rel-${name}`;
    rmSync(root, { recursive: true, force: true });
    for (const d of ['bpf', 'state', 'files']) mkdirSync(join(root, d), { recursive: true, mode: 0o700 });
    const script = `mount -t bpf bpf ${root}/bpf && mount -t tmpfs -o size=${o.tmpfsKb ?? 1024}k,mode=0700 tmpfs ${root}/state && exec sleep infinity`;
    const holder = spawn('unshare', ['-m', '--propagation', 'slave', 'sh', '-c', script], { stdio: 'ignore' });
    const self = readlinkSync('/proc/self/ns/mnt');
    for (let i = 0; i < 100; i++) {
      await sleep(20);
      if (holder.exitCode !== null) break;
      try {
        const ns = readlinkSync(`/proc/${holder.pid}/ns/mnt`);
        const mounts = readFileSync(`/proc/${holder.pid}/mountinfo`, 'utf8');
        if (ns !== self && mounts.includes(` ${root}/state `) && readFileSync(`/proc/${holder.pid}/cmdline`, 'utf8').startsWith('sleep')) {
          return new CaseNs(root, holder, ns);
        }
      } catch { /* not there yet */ }
    }
    holder.kill('SIGKILL');
    throw new Error(`the mount namespace of case ${name} did not come up`);
  }

  env(): NodeJS.ProcessEnv {
    // SLUICE_LOCK_DIR: the machine-wide interface locks of issue 11's later steps, kept private too.
    return { ...process.env, SLUICE_PIN_ROOT: this.pinRoot, SLUICE_STATE_DIR: this.stateDir, SLUICE_LOCK_DIR: join(this.stateDir, '.machine-locks') };
  }

  /** A process inside this mount namespace (nsenter execs it: its pid is the command's own). */
  spawn(cmd: string, args: string[]): Spawned {
    const t0 = Date.now();
    const child = spawn('nsenter', ['-t', String(this.pid), '-m', '--wd=' + REPO, '--', cmd, ...args], { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<Exit>((res) => {
      child.once('close', (code, signal) => res({ code, signal, stdout: out, stderr: err, ms: Date.now() - t0 }));
    });
    return { child, exited, stdout: () => out };
  }

  sluice(...args: string[]): Spawned {
    return this.spawn(process.execPath, [BIN, ...args]);
  }

  async run(cmd: string, args: string[]): Promise<Exit> {
    return this.spawn(cmd, args).exited;
  }

  /** `sluice …`, killed with SIGKILL delayMs after spawn (unless it ended first). */
  async sluiceKilled(args: string[], delayMs: number): Promise<Exit & { killed: boolean }> {
    const s = this.sluice(...args);
    let killed = false;
    const timer = setTimeout(() => { killed = s.child.kill('SIGKILL'); }, delayMs);
    const e = await s.exited;
    clearTimeout(timer);
    return { ...e, killed: killed && e.signal === 'SIGKILL' };
  }

  async probe(o: { iface: string; netns: string; recover?: boolean | 'if-needed'; restore?: string; pairs?: string[] }): Promise<ProbeResult> {
    const e = await this.run(process.execPath, [PROBE, JSON.stringify(o)]);
    try {
      const r = JSON.parse(e.stdout.trim().split('\n').pop() ?? '') as ProbeResult & { fatal?: string };
      if (r.fatal) throw new Error(r.fatal);
      return r;
    } catch (err) {
      throw new Error(`probe failed (${e.code}): ${(err as Error).message}\n${e.stderr}`);
    }
  }

  /** Processes in this mount namespace other than the holder (a daemon, a rollback watcher). */
  members(): number[] {
    const out: number[] = [];
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d) || Number(d) === this.pid) continue;
      try { if (readlinkSync(`/proc/${d}/ns/mnt`) === this.mntNs) out.push(Number(d)); } catch { /* gone */ }
    }
    return out;
  }

  /** Kill what runs in the namespace, then the holder: the bpffs, its pins and the tmpfs go with it. */
  async close(): Promise<void> {
    for (const pid of this.members()) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    if (this.holder.exitCode === null) {
      const gone = new Promise((r) => this.holder.once('exit', r));
      this.holder.kill('SIGKILL');
      await gone;
    }
    for (let i = 0; i < 50 && this.members().length; i++) await sleep(20);
    rmSync(this.root, { recursive: true, force: true });
  }
}

export interface ProbeResult {
  before: Snapshot;
  recovered?: Snapshot;
  recoverError?: string;
  restored?: Snapshot;
  restoreError?: string;
}

// ---------------------------------------------------------------------------------------------
// Old and new policy, and how a snapshot is classified

export const kernelSig = (s: Snapshot): string | null => (s.kernel ? `${s.kernel.rate}/${s.kernel.burst} deny ${s.kernel.deny.join(',')}` : null);
export const settingsSig = (s: Snapshot): string | null => (s.settings ? `${s.settings.rate}/${s.settings.burst} deny ${s.settings.deny.join(',')}` : null);

export type Side = 'old' | 'new' | 'mix' | 'none';
export interface Sigs { oldK: string; newK: string; oldS: string; newS: string }

/** Old or new as a whole, a mix (one part of the change without the other), or nothing readable. */
export function classify(sig: string | null, old: string, neu: string): Side {
  if (sig === null) return 'none';
  if (sig === old) return 'old';
  if (sig === neu) return 'new';
  return 'mix';
}

// ---------------------------------------------------------------------------------------------
// The receiver: the lab's count at tc ingress, sampled

/**
 * One reading of the receiver: t, the wall clock when it began (to place it among the case's
 * events); h0 and h1, the monotonic clock just before and just after the count was read (ms). The
 * count is the kernel's at some moment between h0 and h1, and under load that span is not small:
 * the sampling thread can be descheduled between the clock read and the map read, or inside it
 * (up to 150 ms seen on this 2-CPU VM, loaded, while `up` runs).
 */
export interface Sample { t: number; a: number; h0: number; h1: number }

const mono = (): number => Number(process.hrtime.bigint()) / 1e6;

/**
 * Samples what arrived from source `addr` every `everyMs`. worst() says, over a time span, the
 * most that arrived in any ~100 ms window, and how long the passes ran above the limit (an
 * unprotected interval shows as the flood's rate arriving).
 */
export class Receiver {
  readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly layout: LabLayout, private readonly addr: string, private readonly everyMs = 50) {}

  read(): number {
    try {
      return readCount(countSite(this.layout)).sources.find((s) => s.address === this.addr)?.packets ?? 0;
    } catch {
      return NaN; // the lab's interfaces are gone (the namespace-deletion case)
    }
  }

  /** One sample now, timed on both sides of the read. */
  sample(): Sample {
    const t = Date.now();
    const h0 = mono();
    const a = this.read();
    const h1 = mono();
    return { t, a, h0, h1 };
  }

  start(): void {
    this.timer = setInterval(() => this.samples.push(this.sample()), this.everyMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /**
   * Over [from, to]: the largest count in any window of at least 100 ms (scaled to 100 ms), and
   * the time spent in sampling intervals whose passes exceeded limitPps x dt + two bursts (+ slack),
   * i.e. an unprotected (or wrongly protected) interval. A window runs from one sample to the first
   * at least 100 ms later, and its length dt is the longest it can have been: from just before the
   * first read to just after the last (h1 of the end minus h0 of the start). Timed from the clock
   * reads alone, a read delayed after its clock read makes the window look shorter than the
   * interval its count covers, and a limiter that holds shows as one passing up to
   * limitPps x the delay too many.
   */
  worst(from: number, to: number, limitPps: number, burst: number): { per100ms: number; overMs: number; windows: number; overAt: number[] } {
    const s = this.samples.filter((x) => x.t >= from && x.t <= to && Number.isFinite(x.a));
    let per100ms = 0;
    const over = new Array<boolean>(s.length).fill(false);
    const overAt: number[] = [];
    let j = 0;
    for (let i = 0; i < s.length; i++) {
      while (j < s.length && s[j]!.h0 - s[i]!.h0 < 100) j++;
      if (j >= s.length) break;
      const dt = s[j]!.h1 - s[i]!.h0;
      const d = s[j]!.a - s[i]!.a;
      if (d < 0) continue; // the count was reset (the lab's namespace re-created)
      per100ms = Math.max(per100ms, (d * 100) / dt);
      // Two bursts: over a window that holds a flip, the old policy can pass its rate x (its part
      // of the window) + its burst, and the new one the same with its own (a key started afresh
      // by a change of algorithm or scale, or new to the new half): at most the larger rate x dt +
      // both bursts (docs/reliability.md, Method). The 10: a margin (the per-CPU counts are read
      // one CPU after the other while packets arrive). A flood unprotected for the window passes
      // 4x the limit.
      if (d > (limitPps * dt) / 1000 + 2 * burst + 10) {
        for (let k = i; k < j; k++) over[k] = true;
        if (!overAt.length || s[i]!.t - overAt.at(-1)! > 1000) overAt.push(s[i]!.t);
      }
    }
    let overMs = 0;
    for (let k = 0; k + 1 < s.length; k++) if (over[k]) overMs += s[k + 1]!.h0 - s[k]!.h0;
    return { per100ms: Math.round(per100ms), overMs: Math.round(overMs), windows: s.length, overAt };
  }
}

// ---------------------------------------------------------------------------------------------
// Files

export function writeFile(path: string, text: string): string {
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}
