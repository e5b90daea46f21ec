/**
 * Network namespaces and veth pairs, by iproute2: the mechanics shared by the lab (src/lab) and the
 * tests' Testbed (test/lib/netns.ts).
 *
 * Safety rules kept here:
 *  - veths are created directly inside their namespaces (`ip link add A netns NS1 type veth peer
 *    name B netns NS2`), so nothing ever exists in the host namespace, not even for a moment;
 *  - nothing here adds a route: a namespace has only its on-link prefixes, so nothing sent inside
 *    can leave;
 *  - every command runs without a shell, with a timeout.
 */
import { execFile } from 'node:child_process';

// ---------------------------------------------------------------------------------------------
// Running commands

export interface ExecResult {
  /** Exit code, or null when killed by a signal (e.g. on timeout). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface ExecOpts {
  /** Default 10 000 ms; the child is sent SIGKILL after it. */
  timeoutMs?: number;
  /** Throw (with stdout/stderr in the message) unless the exit code is 0. Default false. */
  check?: boolean;
  /** Written to the child's stdin. */
  input?: string | Buffer;
}

export class ExecError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
  ) {
    const why = result.timedOut ? 'timed out' : result.code !== null ? `exited ${result.code}` : `killed by ${result.signal}`;
    super(`${argv.join(' ')} ${why}\n--- stdout\n${result.stdout}--- stderr\n${result.stderr}`);
    this.name = 'ExecError';
  }
}

/** Runs a program (no shell) and resolves with its outcome; rejects only if it cannot be started,
 *  or with an ExecError when `check` is set and it did not exit 0. */
export function run(cmd: string, args: readonly string[], o: ExecOpts = {}): Promise<ExecResult> {
  const timeout = o.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args as string[],
      { timeout, killSignal: 'SIGKILL', maxBuffer: 64 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: NodeJS.Signals | null }) | null;
        if (e && typeof e.code === 'string') {
          reject(e); // ENOENT and friends: the program is not there
          return;
        }
        const result: ExecResult = {
          code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          signal: e?.signal ?? null,
          stdout,
          stderr,
          timedOut: Boolean(e?.killed && e.signal === 'SIGKILL'),
        };
        if (o.check && result.code !== 0) reject(new ExecError([cmd, ...args], result));
        else resolve(result);
      },
    );
    if (o.input !== undefined) child.stdin?.end(o.input);
    else child.stdin?.end();
  });
}

/** Runs `cmd args` inside namespace `ns` (`ip netns exec`). Note that `ip netns exec` gives the
 *  command a fresh /sys without the BPF filesystem: use the binding's netns options for pins. */
export function nsExec(ns: string, cmd: string, args: readonly string[] = [], o: ExecOpts = {}): Promise<ExecResult> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], o);
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/** `ip netns add ns`; throws if it cannot (for instance when the name is taken). */
export async function addNetns(ns: string): Promise<void> {
  await run('ip', ['netns', 'add', ns], { check: true });
}

/** Loopback up, IPv6 on and DAD off, set before any veth exists so that new interfaces start
 *  without DAD and IPv6 works at once. */
export async function initNetns(ns: string): Promise<void> {
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up'], { check: true });
  await nsExec(ns, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0',
    'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.disable_ipv6=0'], { check: true });
}

/** `ip netns del ns`; true if it is gone afterwards (also when it never existed). */
export async function deleteNetns(ns: string): Promise<{ gone: boolean; stderr: string }> {
  const r = await run('ip', ['netns', 'del', ns]);
  return { gone: r.code === 0 || !(await netnsExists(ns)), stderr: r.stderr.trim() };
}

export async function netnsExists(ns: string): Promise<boolean> {
  return (await listNetns()).includes(ns);
}

export async function listNetns(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { check: true });
  // Lines look like "name" or "name (id: 3)".
  return r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0]!).filter((s) => s !== '');
}

// ---------------------------------------------------------------------------------------------
// Veth pairs

export interface VethSide {
  ns: string;
  ifname: string;
  mac: string;
  numRxQueues?: number;
  numTxQueues?: number;
  mtu?: number;
}

/** A veth pair with each end born inside its namespace: never in the host namespace. */
export async function createVeth(a: VethSide, b: VethSide): Promise<void> {
  const side = (s: VethSide): string[] => {
    const args = [s.ifname, 'netns', s.ns, 'address', s.mac];
    if (s.numTxQueues !== undefined) args.push('numtxqueues', String(s.numTxQueues));
    if (s.numRxQueues !== undefined) args.push('numrxqueues', String(s.numRxQueues));
    if (s.mtu !== undefined) args.push('mtu', String(s.mtu));
    return args;
  };
  await run('ip', ['link', 'add', ...side(a), 'type', 'veth', 'peer', 'name', ...side(b)], { check: true });
}

export interface EndAddresses {
  ipv4: string;
  prefix4: number;
  ipv6: string;
  prefix6: number;
}

/** DAD off, then the addresses (unless none are given), then the link up. Adds no route. */
export async function configureEnd(ns: string, ifname: string, addr: EndAddresses | undefined): Promise<void> {
  await nsExec(ns, 'sysctl', ['-q', '-w', `net.ipv6.conf.${ifname}.accept_dad=0`], { check: true });
  if (addr) {
    await run('ip', ['-n', ns, 'addr', 'add', `${addr.ipv4}/${addr.prefix4}`, 'dev', ifname], { check: true });
    await run('ip', ['-n', ns, '-6', 'addr', 'add', `${addr.ipv6}/${addr.prefix6}`, 'dev', ifname, 'nodad'], { check: true });
  }
  await run('ip', ['-n', ns, 'link', 'set', ifname, 'up'], { check: true });
}

/** Carrier-on reaches the device through linkwatch, which may wait up to a second; until then the
 *  device has the noop qdisc and drops what is sent (the first NS/ARP would be lost). */
export async function waitLinkReady(ns: string, ifname: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await run('ip', ['-n', ns, '-o', 'link', 'show', 'dev', ifname], { check: true });
    if (/\bstate UP\b/.test(r.stdout) && !/\bqdisc noop\b/.test(r.stdout)) return;
    if (Date.now() >= deadline) throw new Error(`${ifname} in ${ns} not up after ${timeoutMs} ms: ${r.stdout.trim()}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

/** Pids of the processes whose network namespace is `ns` (`ip netns pids`). */
export async function netnsPids(ns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', ns]);
  if (r.code !== 0) return [];
  return r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number);
}
