/**
 * Every subcommand module. Each exports `register(program)`, which adds its command(s) to the
 * `sluice` program; keep one module per subcommand (or per group, like `lab`).
 */
import type { Command } from 'commander';

export type Register = (program: Command) => void;

export const COMMANDS: Register[] = [];
