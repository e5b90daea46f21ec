/**
 * Lockout safety: a policy applied with a deadline is rolled back unless confirmed in time. The
 * previous settings are kept in /run/sluice/<scope>/<iface>.pending.json; a detached watcher
 * process (`sluice policy _rollback`) restores them at the deadline if the file is still there.
 * `sluice policy confirm` removes the file.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { settingsPath, type Place, type Settings } from './state';

export interface Pending {
  deadline: number;
  previous: Settings;
  applied: string;
}

export const pendingPath = (p: Place): string => settingsPath(p).replace(/\.json$/, '.pending.json');

export function readPending(p: Place): Pending | undefined {
  const path = pendingPath(p);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Pending) : undefined;
}

export function writePending(p: Place, pending: Pending): void {
  writeFileSync(pendingPath(p), JSON.stringify(pending, null, 2) + '\n', { mode: 0o600 });
}

export function clearPending(p: Place): boolean {
  const had = existsSync(pendingPath(p));
  rmSync(pendingPath(p), { force: true });
  return had;
}

/** Start the watcher that rolls back at the deadline; it outlives this process. */
export function startRollbackWatcher(p: Place, deadline: number): void {
  const bin = resolve(__dirname, '..', '..', '..', 'bin', 'sluice.js');
  const args = [bin, 'policy', '_rollback', '--iface', p.iface, ...(p.netns ? ['--netns', p.netns] : []), '--deadline', String(deadline)];
  const child = spawn(process.execPath, args, { detached: true, stdio: 'ignore' });
  child.unref();
}
