/**
 * The `sluice` command as a real process, for end-to-end tests.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from './datapath';

export const BIN = join(REPO, 'bin', 'sluice.js');

export interface Run { code: number; stdout: string; stderr: string }

/** Run `sluice ...args`; never throws, returns the exit code and output. */
export function sluice(...args: string[]): Promise<Run> {
  return new Promise((res) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Run it and require success; returns stdout. */
export async function ok(...args: string[]): Promise<string> {
  const r = await sluice(...args);
  assert.equal(r.code, 0, `sluice ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Run it with --json and parse the output. */
export async function json<T = Record<string, unknown>>(...args: string[]): Promise<T> {
  return JSON.parse(await ok(...args, '--json')) as T;
}
