/** Where the benchmarks write their results (bench/results/*.json), and what they record of the machine. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../test/lib/datapath';

export const RESULTS = join(REPO, 'bench', 'results');

export function writeResultFile(name: string, data: unknown): string {
  mkdirSync(RESULTS, { recursive: true });
  const path = join(RESULTS, name);
  writeFileSync(path, `${JSON.stringify(data, null, 2)}\n`);
  return path;
}

export function machine(): { kernel: string; cpu: string; cpus: number } {
  return { kernel: release(), cpu: cpus()[0]?.model ?? '?', cpus: cpus().length };
}
