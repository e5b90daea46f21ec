/**
 * What the daemon tests share: the daemon as a child process (`sluice run`) with its JSON log
 * lines, HTTP over its Unix socket, config files written the way editors write them (a new file
 * renamed over the old; these live in src/lab/daemon-process.ts, the benchmarks use them too), and
 * counters read through the control plane.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { Protection } from '../../src/agent/protection';
import { takeSnapshot } from '../../src/agent/report';
import type { Place } from '../../src/agent/state';
import { SLUICE_BIN as SLUICE } from '../../src/ebpf/paths';
import { watchDaemon, type DaemonProcess } from '../../src/lab/daemon-process';
import type { Totals } from '../../src/limiter/stats';

export { REPO } from '../../src/ebpf/paths';
export { SLUICE };
export { http, killDaemon, watchDaemon, writeConfig, type DaemonProcess, type HttpResult, type LogLine } from '../../src/lab/daemon-process';

export function startDaemon(config: string, args: string[] = []): DaemonProcess {
  return watchDaemon(spawn(process.execPath, [SLUICE, 'run', '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** Totals since attach, read from the pins through the control plane (no daemon needed). */
export function totals(place: Place): Totals {
  const p = Protection.open(place);
  try {
    const t = takeSnapshot(p).totals;
    return { allowed_packets: t.allowed_packets, dropped_packets: t.dropped_packets, allowed_bytes: t.allowed_bytes, dropped_bytes: t.dropped_bytes };
  } finally {
    p.close();
  }
}

export function delta(a: Totals, b: Totals): { allowed: number; dropped: number } {
  return { allowed: b.allowed_packets - a.allowed_packets, dropped: b.dropped_packets - a.dropped_packets };
}

/** A TCP port free on 127.0.0.1 now. */
export async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  s.close();
  await once(s, 'close');
  return port;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Wait for the start of the next fixed window (plus 20 ms). The data path numbers windows by
 * CLOCK_MONOTONIC / window, the clock of process.hrtime, so a flood started now and sent within
 * the window meets a fresh budget: its passes are exactly min(sent, rate).
 */
export async function nextWindow(windowMs = 1000): Promise<void> {
  const w = BigInt(windowMs) * 1_000_000n;
  const into = process.hrtime.bigint() % w;
  await sleep(Number(w - into) / 1e6 + 20);
}
