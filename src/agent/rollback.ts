/**
 * Rollback of a change applied with a deadline (`policy apply --confirm-within`), and the process
 * that does it. The daemon runs it for the interfaces it manages (it checks their pending files
 * every second); otherwise `policy apply` starts a detached agent (`sluice policy _rollback`), so
 * that an operator on SSH with no daemon is covered. The pending file (./pending.ts) is written
 * under the interface's lock before the change goes live, names its holder, and is restored only
 * by the rollback armed for it (its id). A rollback that fails is retried, then left marked failed
 * in the pending file: loud in `policy show`, `status`, the metrics and the logs.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { SLUICE_BIN } from '../ebpf';
import { AgentCode, AgentError } from './errors';
import { ApiCode } from '../limiter/errors';
import { assertNoPending, clearPending, holderAlive, readPending, rollbackLogPath, writePending, type Pending, type PendingHolder } from './pending';
import { Protection, type UpOptions, type UpResult } from './protection';
import { loadSettings, managerOf, policyContent, withLock, type Place } from './state';
import { point } from './testhooks';

const flagsOf = (p: Place): string => `--iface ${p.iface}${p.netns ? ` --netns ${p.netns}` : ''}`;

/** Start the detached agent that rolls back pending `id` at its deadline; it outlives this process. */
function startAgent(p: Place, id: string): number {
  const bin = SLUICE_BIN;
  const log = rollbackLogPath(p);
  mkdirSync(dirname(log), { recursive: true, mode: 0o700 });
  const out = openSync(log, 'a', 0o600);
  try {
    const args = [bin, 'policy', '_rollback', ...flagsOf(p).split(' '), '--id', id];
    const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, out] });
    child.unref();
    if (!child.pid) throw new AgentError(AgentCode.RollbackFailed, `could not start the rollback agent (${process.execPath} ${args.join(' ')}): nothing was changed`);
    return child.pid;
  } finally {
    closeSync(out);
  }
}

/**
 * Apply a change (an `up` of the given settings) with a deadline: under the interface's lock, the
 * holder is chosen (the daemon that manages the interface, or a new agent), the pending rollback
 * is persisted, and only then does the change go live. A change that fails removes its pending
 * file again (the agent then finds none and ends).
 */
export async function applyWithRollback(o: UpOptions & { applied: string }, withinMs: number): Promise<UpResult & { pending: Pending }> {
  return Protection.locked(o, async () => {
    assertNoPending(o);
    const previous = loadSettings(o);
    if (!previous) throw new AgentError(AgentCode.NotProtected, `${o.iface} is not protected by Sluice (start with \`sluice up ${flagsOf(o)}\`)`);
    const id = randomUUID();
    const daemon = managerOf(o);
    const holder: PendingHolder = daemon ? { kind: 'daemon', pid: daemon } : { kind: 'agent', pid: startAgent(o, id) };
    const pending: Pending = { id, deadline: Date.now() + withinMs, previous, applied: o.applied, createdAt: new Date().toISOString(), holder, failed: null };
    writePending(o, pending);
    point('pending');
    try {
      const r = await Protection.up({ ...o, allowPending: id });
      return { ...r, pending };
    } catch (e) {
      clearPending(o, id);
      if (holder.kind === 'agent') try { process.kill(holder.pid, 'SIGTERM'); } catch { /* gone */ }
      throw e;
    }
  });
}

/**
 * Restore the settings from before pending `id` (or whatever is pending, when id is undefined):
 * under the lock, only if that pending change is still there. Returns false when there was none
 * (confirmed, superseded, or rolled back already). A failure is recorded in the pending file and
 * thrown (SLUICE_E_ROLLBACK_FAILED).
 */
export async function rollbackNow(p: Place, id?: string): Promise<boolean> {
  return Protection.locked(p, async () => {
    const pending = readPending(p);
    if (!pending || (id !== undefined && pending.id !== id)) return false;
    const prev = pending.previous;
    try {
      point('rollback');
      const r = await Protection.up({ ...p, ...policyContent(prev), policyFile: prev.policyFile, allowPending: pending.id });
      r.protection.close();
    } catch (e) {
      const err = e as { code?: string; message?: string };
      const failed = { at: new Date().toISOString(), attempts: (pending.failed?.attempts ?? 0) + 1, code: err.code ?? ApiCode.Internal, message: err.message ?? String(e) };
      writePending(p, { ...pending, failed });
      throw new AgentError(AgentCode.RollbackFailed, `the rollback of ${pending.applied} on ${p.iface}${p.netns ? ` (network namespace ${p.netns})` : ''} failed (attempt ${failed.attempts}): ${failed.code}: ${failed.message}. ${pending.applied} stays live; retry with \`sluice policy rollback ${flagsOf(p)}\`, or keep it with \`sluice policy confirm ${flagsOf(p)}\``);
    }
    clearPending(p, pending.id);
    return true;
  });
}

/** Keep the change pending on p: remove its pending file under the lock. */
export async function confirm(p: Place): Promise<boolean> {
  return Protection.locked(p, () => clearPending(p));
}

const log = (level: 'info' | 'error', event: string, p: Place, msg: string, extra: Record<string, unknown> = {}): void => {
  console.log(JSON.stringify({ level, time: new Date().toISOString(), pid: process.pid, name: 'sluice-rollback', event, iface: p.iface, netns: p.netns, ...extra, msg }));
};

/**
 * The detached agent (`sluice policy _rollback`): wait for the deadline of pending `id`, then roll
 * it back, retrying a failure a few times; logs JSON lines to <scope>/<iface>.rollback.log. Ends
 * early when the pending change is confirmed or replaced. Exit code 1 when the rollback failed.
 */
export async function runAgent(p: Place, id: string, o: { attempts?: number; retryMs?: number } = {}): Promise<number> {
  const attempts = o.attempts ?? 3;
  // The apply that started this agent holds the lock until its pending file is written and its
  // change is live (or refused): only then is "no pending file" an answer.
  await withLock(p, () => undefined, 600_000);
  for (;;) {
    const pending = readPending(p);
    if (!pending || pending.id !== id) {
      log('info', 'rollback_not_needed', p, `nothing to roll back for ${id}: confirmed, rolled back or taken down`, { id });
      return 0;
    }
    const wait = pending.deadline - Date.now();
    if (wait <= 0) break;
    await new Promise((r) => setTimeout(r, Math.min(wait, 1000)));
  }
  for (let i = 1; ; i++) {
    try {
      const done = await rollbackNow(p, id);
      if (done) log('info', 'rolled_back', p, `rolled back: the settings from before the change are live again`, { id });
      return 0;
    } catch (e) {
      log('error', 'rollback_failed', p, (e as Error).message, { id, attempt: i, code: (e as { code?: string }).code });
      if (i >= attempts) return 1;
      await new Promise((r) => setTimeout(r, o.retryMs ?? 1000));
    }
  }
}

/** For a daemon: the pending rollback of p is due and this daemon is to do it (it holds it, or its holder is gone). */
export function rollbackDue(p: Place, now = Date.now()): Pending | undefined {
  const pending = readPending(p);
  if (!pending || pending.failed || pending.deadline > now) return undefined;
  const mine = pending.holder?.kind === 'daemon' && pending.holder.pid === process.pid;
  return mine || !holderAlive(pending.holder, p) ? pending : undefined;
}

/**
 * Before a change of p by anyone but the holder: a rollback that is due and whose holder is gone (a
 * killed detached agent, a stopped daemon) is carried out now, so that an unconfirmed change never
 * outlives its deadline because the process that was to undo it died. Returns what was rolled back.
 */
export async function settleDueRollback(p: Place): Promise<Pending | undefined> {
  const due = rollbackDue(p);
  if (!due || (due.holder?.kind === 'daemon' && due.holder.pid === process.pid)) return undefined;
  return (await rollbackNow(p, due.id)) ? due : undefined;
}
