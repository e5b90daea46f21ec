/**
 * The `sluice` command. One module per subcommand under src/cli/commands/, each thin over
 * agent / limiter / lab; this file only assembles them and turns errors into exit codes.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { COMMANDS } from './commands';
import { PACKAGE_JSON, VerifierError } from '../ebpf';
import { EXIT, failure, reportError } from './common';
import { settleDueRollback } from './due-rollback';
import { UNITS_HELP } from '../limiter/units';
import { quietOnClosedPipe } from './terminal';
import { AgentCode } from '../limiter/errors';

/** The version of the package this file was installed with. */
const VERSION = (JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { version: string }).version;

quietOnClosedPipe();

const program = new Command();
program
  .name('sluice')
  .description('Per-client rate limiting in the kernel (XDP), run from user space')
  .version(VERSION)
  .option('-v, --verbose', 'on failure, print everything known: the whole verifier log, the stack')
  // Argument errors are printed below, as one line with its code and a hint, not 30 lines of help.
  .configureOutput({ outputError: () => undefined })
  .exitOverride();
for (const register of COMMANDS) register(program);
program.hook('preAction', (_cmd, action) => settleDueRollback(action));
// Every command, at every depth, throws instead of exiting: the exit code is docs/cli.md's.
const override = (c: Command): void => {
  c.exitOverride();
  c.configureOutput({ outputError: () => undefined });
  c.commands.forEach(override);
};
program.commands.forEach(override);

/** The command the arguments name (`sluice policy check`), for the hint after an argument error. */
function commandOf(argv: string[]): string {
  let c: Command = program;
  const names = ['sluice'];
  for (const a of argv) {
    if (a.startsWith('-')) continue;
    const sub = c.commands.find((x) => x.name() === a || x.aliases().includes(a));
    if (!sub) break;
    c = sub;
    names.push(sub.name());
  }
  return names.join(' ');
}
const args = process.argv.slice(2);
const asJson = args.includes('--json');

// Every help text that takes a value with a unit ends with the one grammar of units.
const UNIT_OPTIONS = new Set(['--rate', '--bytes-rate', '--burst', '--bytes-burst', '--window', '--sample', '--watch', '--confirm-within', '--max-entries', '--max-rules', '--max-list-entries', '--count', '--new-states-per-sec', '--duration', '--timeout', '--rate-after', '--abusive']);
const withUnits = (c: Command): void => {
  if (c.options.some((o) => o.long && UNIT_OPTIONS.has(o.long))) c.addHelpText('after', `\n${UNITS_HELP}`);
  c.commands.forEach(withUnits);
};
program.commands.forEach(withUnits);
program.addHelpText('after', `\n${UNITS_HELP}\n\nExit codes: 0 done, 1 failed, 2 invalid arguments or policy (nothing changed), 3 not protected, 4 missing privileges (docs/cli.md).`);

program.parseAsync().catch((e: unknown) => {
  if (e instanceof CommanderError) {
    // Help and version end with code 0; `sluice` alone (help on stderr) and every argument error with 2.
    if (e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.version') {
      process.exitCode = EXIT.ok;
      return;
    }
    if (e.code !== 'commander.help' && e.code !== 'commander.executeSubCommandAsync') {
      const message = e.message.replace(/^error: /, '');
      reportError({ code: EXIT.usage, error: AgentCode.InvalidArgument, message }, asJson, `(\`${commandOf(args)} --help\` shows the options and examples)`);
    }
    process.exitCode = EXIT.usage;
    return;
  }
  const f = failure(e);
  reportError(f, asJson);
  const verbose = program.opts<{ verbose?: boolean }>().verbose || !!process.env['SLUICE_DEBUG'];
  if (e instanceof VerifierError) {
    if (verbose) console.error(`\nverifier log of ${e.program ?? 'the program'}:\n${e.log}`);
    else console.error('(the whole verifier log: run again with --verbose)');
  }
  if (verbose && e instanceof Error) console.error(e.stack);
  process.exitCode = f.code;
});
