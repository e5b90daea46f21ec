/**
 * Every subcommand module. Each exports `register(program)`, which adds its command(s) to the
 * `sluice` program; keep one module per subcommand (or per group, like `lab`).
 */
import type { Command } from 'commander';
import * as demo from './demo';
import * as down from './down';
import * as dump from './dump';
import * as events from './events';
import * as lab from './lab';
import * as lists from './lists';
import * as policy from './policy';
import * as set from './set';
import * as stats from './stats';
import * as status from './status';
import * as top from './top';
import * as run from './run';
import * as up from './up';

export type Register = (program: Command) => void;

export const COMMANDS: Register[] = [up, down, set, policy, stats, top, events, lists, status, dump, run, lab, demo].map((m) => m.register);
