/** Where the benchmarks write their results (bench/results/*.json), and what they record of the machine. */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { REPO } from '../../src/ebpf/paths';

export const RESULTS = join(REPO, 'bench', 'results');

/**
 * Write bench/results/NAME. Every file says which machine it ran on (`machine`): costs differ
 * between CPUs of one kind (the fine clock, hashing, atomics), so a figure means nothing without it.
 */
export function writeResultFile(name: string, data: unknown): string {
  mkdirSync(RESULTS, { recursive: true });
  const path = join(RESULTS, name);
  const out = data && typeof data === 'object' && !Array.isArray(data) && !('machine' in data) ? { ...data, machine: machine() } : data;
  writeFileSync(path, `${JSON.stringify(out, null, 2)}\n`);
  return path;
}

export interface Machine {
  kernel: string;
  /** /proc/cpuinfo's model name, with its family and model numbers (a VM often hides the rest). */
  cpu: string;
  cpu_family?: number;
  cpu_model?: number;
  cpus: number;
  /** The kernel's clock source (tsc, kvm-clock …): what bpf_ktime_get_ns() costs depends on it. */
  clocksource?: string;
  /** CONFIG_HZ: the step of the coarse clock. */
  hz?: number;
}

const read = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
};

export function machine(): Machine {
  const info = read('/proc/cpuinfo') ?? '';
  const field = (k: string): string | undefined => new RegExp(`^${k}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim();
  let hz: number | undefined;
  if (existsSync('/proc/config.gz')) {
    try {
      const m = /^CONFIG_HZ=(\d+)$/m.exec(gunzipSync(readFileSync('/proc/config.gz')).toString());
      if (m) hz = Number(m[1]);
    } catch { /* unreadable */ }
  }
  const family = field('cpu family');
  const model = field('model');
  return {
    kernel: release(),
    cpu: field('model name') ?? cpus()[0]?.model ?? '?',
    ...(family !== undefined ? { cpu_family: Number(family) } : {}),
    ...(model !== undefined ? { cpu_model: Number(model) } : {}),
    cpus: cpus().length,
    ...(read('/sys/devices/system/clocksource/clocksource0/current_clocksource') ? { clocksource: read('/sys/devices/system/clocksource/clocksource0/current_clocksource')!.trim() } : {}),
    ...(hz ? { hz } : {}),
  };
}
