/**
 * Before a command changes an interface: a rollback that is due and whose holder is gone (its
 * detached agent was killed, its daemon stopped) is carried out first, so that an unconfirmed
 * change never outlives its deadline merely because the process that was to undo it died. Said on
 * stderr; a rollback that fails is an error of the command (nothing else is changed).
 */
import type { Command } from 'commander';
import { rollbackDue, settleDueRollback as settle } from '../agent/rollback';
import { placeProblems } from '../limiter/names';

/** Commands that change an interface, by their path under `sluice`. */
const CHANGING = new Set(['up', 'set', 'allow add', 'allow del', 'deny add', 'deny del', 'mgmt add', 'mgmt del', 'policy apply', 'policy confirm', 'policy plug', 'policy unplug']);

function pathOf(c: Command): string {
  const names: string[] = [];
  for (let x: Command | null = c; x && x.parent; x = x.parent) names.unshift(x.name());
  return names.join(' ');
}

export async function settleDueRollback(action: Command): Promise<void> {
  if (!CHANGING.has(pathOf(action))) return;
  const o = action.opts<{ iface?: string; netns?: string }>();
  if (!o.iface) return;
  if (placeProblems({ iface: o.iface, netns: o.netns ?? null }).length) return; // the command refuses it, in its own words
  const place = { iface: o.iface, netns: o.netns ?? null };
  const due = rollbackDue(place);
  if (!due) return;
  console.error(`sluice: the change ${due.applied} was not confirmed by ${new Date(due.deadline).toISOString()} and the process that was to roll it back is gone: rolling it back now`);
  await settle(place);
}
