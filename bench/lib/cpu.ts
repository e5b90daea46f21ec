/**
 * CPU time per CPU from /proc/stat, for "CPU use" and for the receiver's CPU time per packet.
 * Values are in USER_HZ ticks (10 ms); a difference of two samples gives each CPU's split.
 */
import { readFileSync } from 'node:fs';

/** user, nice, system, idle, iowait, irq, softirq, steal — per CPU. */
export type CpuSample = number[][];

export function sampleCpus(): CpuSample {
  return readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .filter((l) => /^cpu\d+ /.test(l))
    .map((l) => l.trim().split(/\s+/).slice(1, 9).map(Number));
}

export interface CpuUse {
  /** Share of the interval the CPU was busy (everything but idle and iowait), 0..1. */
  busy: number;
  user: number;
  system: number;
  softirq: number;
  /** Seconds busy in the interval. */
  busySeconds: number;
}

const TICK_S = 0.01; // USER_HZ = 100 on Linux

export function cpuUse(a: CpuSample, b: CpuSample): CpuUse[] {
  return b.map((row, cpu) => {
    const d = row.map((v, i) => v - (a[cpu]?.[i] ?? 0));
    const total = d.reduce((x, y) => x + y, 0) || 1;
    const idle = d[3]! + d[4]!;
    return {
      busy: (total - idle) / total,
      user: (d[0]! + d[1]!) / total,
      system: (d[2]! + d[5]!) / total,
      softirq: d[6]! / total,
      busySeconds: (total - idle) * TICK_S,
    };
  });
}
