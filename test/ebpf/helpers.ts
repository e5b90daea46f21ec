/**
 * Shared by the tests of src/ebpf: fixture objects, a per-run id, bpffs, and
 * network namespaces that the test creates and always removes. Nothing here
 * touches a host interface: veth pairs are created directly inside the
 * test's own namespaces.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The repository root, found from this file in test/ebpf/ or dist/test/ebpf/. */
export const repoRoot: string = (() => {
  for (let dir = __dirname; dirname(dir) !== dir; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'test', 'ebpf', 'fixtures', 'Makefile'))) return dir;
  }
  throw new Error(`repository root not found above ${__dirname}`);
})();

const fixturesDir = join(repoRoot, 'test', 'ebpf', 'fixtures');

let built = false;

/** Path of a fixture object (tiny, bad), built with make on first use. */
export function fixture(name: 'tiny' | 'bad'): string {
  if (!built) {
    execFileSync('make', ['-s', '-C', fixturesDir], { stdio: ['ignore', 'ignore', 'inherit'] });
    built = true;
  }
  return join(fixturesDir, `${name}.bpf.o`);
}

/** Unique per test process: names of namespaces and pins carry it. */
export const runId = `sluice-test-${process.pid}-${randomBytes(3).toString('hex')}`;

/** Run a command; throws with its stderr on failure. */
export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const BPF_FS_MAGIC = 0xcafe4a11;
export const BPFFS = '/sys/fs/bpf';

/** Mount bpffs at /sys/fs/bpf if it is not there (left mounted: other tools use it too). */
export function ensureBpffs(): void {
  if (statfsSync(BPFFS).type === BPF_FS_MAGIC) return;
  sh('mount', ['-t', 'bpf', 'bpf', BPFFS]);
}

/** A fresh directory for pins, /sys/fs/bpf/<runId>-<suffix>. Remove it with rmSync(…, {recursive}). */
export function pinDir(suffix: string): string {
  ensureBpffs();
  const dir = join(BPFFS, `${runId}-${suffix}`);
  mkdirSync(dir);
  return dir;
}

export function removePinDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Entries under /sys/fs/bpf and /var/run/netns whose names carry this run's id. */
export function leftovers(): string[] {
  const found: string[] = [];
  for (const dir of [BPFFS, '/var/run/netns']) {
    if (!existsSync(dir)) continue;
    for (const e of readdirSync(dir)) if (e.includes(runId)) found.push(join(dir, e));
  }
  return found;
}

/**
 * Two namespaces "<runId>-a" and "<runId>-b" joined by a veth pair vA (in a)
 * and vB (in b), both up, with link-local IPv6 fe80::1 and fe80::2.
 */
export interface VethPair {
  nsA: string;
  nsB: string;
  ifA: string;
  ifB: string;
  addrA: string;
  addrB: string;
  destroy(): void;
}

export function createVethPair(): VethPair {
  const nsA = `${runId}-a`;
  const nsB = `${runId}-b`;
  const pair: VethPair = {
    nsA,
    nsB,
    ifA: 'vA',
    ifB: 'vB',
    addrA: 'fe80::1',
    addrB: 'fe80::2',
    destroy: () => {
      for (const ns of [nsA, nsB]) {
        try {
          sh('ip', ['netns', 'del', ns]); // the veth goes with its namespace
        } catch {
          /* not created */
        }
      }
    },
  };
  try {
    sh('ip', ['netns', 'add', nsA]);
    sh('ip', ['netns', 'add', nsB]);
    // Created inside nsA with its peer placed straight into nsB: never in the host namespace.
    sh('ip', ['-n', nsA, 'link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB', 'netns', nsB]);
    sh('ip', ['-n', nsA, 'addr', 'add', 'fe80::1/64', 'dev', 'vA', 'nodad']);
    sh('ip', ['-n', nsB, 'addr', 'add', 'fe80::2/64', 'dev', 'vB', 'nodad']);
    sh('ip', ['-n', nsA, 'link', 'set', 'vA', 'up']);
    sh('ip', ['-n', nsB, 'link', 'set', 'vB', 'up']);
  } catch (e) {
    pair.destroy();
    throw e;
  }
  return pair;
}

/** A minimal Ethernet frame (64 bytes) whose first byte is `first`. */
export function frame(first: number, len = 64): Buffer {
  const b = Buffer.alloc(len);
  b[0] = first;
  b.writeUInt16BE(0x0800, 12);
  return b;
}

export const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

export const u64 = (n: number | bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

export const XDP = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;
