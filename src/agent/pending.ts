/**
 * Lockout safety: a change applied with a deadline (`policy apply --confirm-within`) is rolled back
 * unless confirmed in time. The pending rollback is one file, <scope>/<iface>.pending.json, written
 * (atomically) before the change goes live, with the settings to restore, a unique id and the
 * process that will roll back (its holder: a detached agent, or the daemon that manages the
 * interface). While it exists every other change of the interface is refused (SLUICE_E_PENDING);
 * `policy confirm` removes it, `policy rollback` restores at once. A rollback that fails stays in
 * the file, marked failed, and shows in `policy show`, `status`, the metrics and the logs.
 * The rollback itself is src/agent/rollback.ts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { AgentCode, AgentError } from './errors';
import { managerOf, removeFileDurably, settingsPath, writeFileAtomic, type Place, type Settings } from './state';

export interface PendingHolder {
  kind: 'agent' | 'daemon';
  pid: number;
}

export interface Pending {
  /** Unique per change: a rollback restores only the change it was armed for. */
  id: string;
  /** Epoch ms. */
  deadline: number;
  previous: Settings;
  /** The policy file applied. */
  applied: string;
  createdAt?: string;
  holder?: PendingHolder | null;
  /** The last failed attempt to roll back (the file stays until a rollback succeeds or is confirmed). */
  failed?: { at: string; attempts: number; code: string; message: string } | null;
}

export const pendingPath = (p: Place): string => settingsPath(p).replace(/\.json$/, '.pending.json');
export const rollbackLogPath = (p: Place): string => settingsPath(p).replace(/\.json$/, '.rollback.log');

export function readPending(p: Place): Pending | undefined {
  const path = pendingPath(p);
  if (!existsSync(path)) return undefined;
  const x = JSON.parse(readFileSync(path, 'utf8')) as Pending;
  return { ...x, id: x.id ?? String(x.deadline) }; // files written before ids: the deadline was the id
}

export function writePending(p: Place, pending: Pending): void {
  writeFileAtomic(pendingPath(p), JSON.stringify(pending, null, 2) + '\n');
}

/** Remove the pending rollback (only that one, when id is given); true when one was removed. */
export function clearPending(p: Place, id?: string): boolean {
  const cur = readPending(p);
  if (!cur || (id !== undefined && cur.id !== id)) return false;
  return removeFileDurably(pendingPath(p));
}

/**
 * Whether the holder of a pending rollback still runs as that holder: a daemon while it holds the
 * interface's manager lock, an agent while its process runs `sluice policy _rollback`.
 */
export function holderAlive(h: PendingHolder | null | undefined, p?: Place): boolean {
  if (!h) return false;
  if (h.kind === 'daemon' && p) return managerOf(p) === h.pid;
  try {
    return /_rollback/.test(readFileSync(`/proc/${h.pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}

/** What a person needs to know about a pending rollback, for `policy show`, `status`, the API. */
export interface PendingSummary {
  id: string;
  state: 'pending' | 'failed' | 'orphaned';
  rollback_at: string;
  applied: string;
  holder: (PendingHolder & { alive: boolean }) | null;
  failed: Pending['failed'] | null;
}

export function summarizePending(p: Place): PendingSummary | null {
  const x = readPending(p);
  if (!x) return null;
  const alive = holderAlive(x.holder, p);
  return {
    id: x.id,
    state: x.failed ? 'failed' : alive ? 'pending' : 'orphaned',
    rollback_at: new Date(x.deadline).toISOString(),
    applied: x.applied,
    holder: x.holder ? { ...x.holder, alive } : null,
    failed: x.failed ?? null,
  };
}

/** One line for people. */
export function describePending(s: PendingSummary, flags: string): string {
  const who = s.holder ? `${s.holder.kind === 'daemon' ? 'the daemon' : 'the rollback agent'}, process ${s.holder.pid}${s.holder.alive ? '' : ' (gone)'}` : 'no process';
  if (s.state === 'failed') return `ROLLBACK FAILED: restoring the settings from before ${s.applied} failed (${s.failed!.attempts} attempt${s.failed!.attempts === 1 ? '' : 's'}, last at ${s.failed!.at}: ${s.failed!.code}: ${s.failed!.message}); ${s.applied} stays live. Retry with \`sluice policy rollback ${flags}\`, or keep it with \`sluice policy confirm ${flags}\``;
  if (s.state === 'orphaned') return `rollback of ${s.applied} due at ${s.rollback_at}, but its holder (${who}) is not running, so nothing will roll back by itself: run \`sluice policy rollback ${flags}\` or \`sluice policy confirm ${flags}\``;
  return `rolls back ${s.applied} at ${s.rollback_at} unless confirmed (held by ${who}): \`sluice policy confirm ${flags}\``;
}

/**
 * Refuse a change while a rollback is pending (unless the change is the one it was armed for, or
 * the rollback itself): the rollback would otherwise undo the later change with the earlier one.
 */
export function assertNoPending(p: Place, allowId?: string): void {
  const x = readPending(p);
  if (!x || x.id === allowId) return;
  const flags = `--iface ${p.iface}${p.netns ? ` --netns ${p.netns}` : ''}`;
  const s = summarizePending(p)!;
  throw new AgentError(AgentCode.Pending, `${p.iface}${p.netns ? ` (network namespace ${p.netns})` : ''} has a pending change: ${x.applied} was applied with --confirm-within and ${describePending(s, flags).replace(/^ROLLBACK FAILED: /, 'its rollback failed: ')}. Nothing was changed: first keep it (\`sluice policy confirm ${flags}\`) or undo it now (\`sluice policy rollback ${flags}\`), then run this command again`);
}
