/**
 * Private roots for the pins and the settings of one test file, for tests of commands that remove
 * things: import this module first, before anything that loads src/agent/state.ts, so that this
 * process and every `sluice` it starts (children inherit the environment) keep their pins under
 * /sys/fs/bpf/<run id>-<pid>/… and their settings in a temporary directory. A bug that removes
 * "every pin on the machine" then removes only this file's; the real /sys/fs/bpf/sluice and the pins
 * of other runs are out of its reach.
 *
 * The pin root is three levels below the private top directory, so that even a path that climbs
 * two levels ("--netns .. --iface ..") stays inside it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runId } from './netns';

export const PRIVATE_TOP = `/sys/fs/bpf/${runId()}-${process.pid.toString(36)}`;
export const PIN_ROOT = join(PRIVATE_TOP, 'g1', 'g2', 'sluice');
export const STATE_DIR = mkdtempSync(join(tmpdir(), `sluice-state-${runId()}-`));

process.env['SLUICE_PIN_ROOT'] = PIN_ROOT;
process.env['SLUICE_STATE_DIR'] = STATE_DIR;
// The daemons' machine-wide interface locks (src/agent/state.ts, MANAGER_ROOT), kept private too.
process.env['SLUICE_LOCK_DIR'] = join(STATE_DIR, 'machine-locks');

/** Remove both private roots (whatever a test left in them). */
export function removePrivateRoots(): void {
  rmSync(PRIVATE_TOP, { recursive: true, force: true });
  rmSync(STATE_DIR, { recursive: true, force: true });
}
