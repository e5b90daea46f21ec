/**
 * The `sluice` command. One module per subcommand under src/cli/commands/, each thin over
 * agent / limiter / lab; this file only assembles them and turns errors into exit codes.
 */
import { Command, CommanderError } from 'commander';
import { COMMANDS } from './commands';
import { VerifierError } from '../ebpf';
import { EXIT, failure } from './common';
import { UNITS_HELP } from '../limiter/units';

const program = new Command();
program
  .name('sluice')
  .description('Per-client rate limiting in the kernel (XDP), run from user space')
  .version('0.1.0')
  .option('-v, --verbose', 'on failure, print everything known: the whole verifier log, the stack')
  .showHelpAfterError()
  .exitOverride();
for (const register of COMMANDS) register(program);
program.commands.forEach((c) => c.exitOverride());

// Every help text that takes a value with a unit ends with the one grammar of units.
const UNIT_OPTIONS = new Set(['--rate', '--bytes-rate', '--burst', '--bytes-burst', '--window', '--sample', '--watch', '--confirm-within', '--max-entries', '--max-rules', '--max-list-entries', '--count', '--new-states-per-sec', '--seconds', '--rate-after', '--abusive']);
const withUnits = (c: Command): void => {
  if (c.options.some((o) => o.long && UNIT_OPTIONS.has(o.long))) c.addHelpText('after', `\n${UNITS_HELP}`);
  c.commands.forEach(withUnits);
};
program.commands.forEach(withUnits);
program.addHelpText('after', `\n${UNITS_HELP}\n\nExit codes: 0 done, 1 failed, 2 invalid arguments or policy (nothing changed), 3 not protected, 4 missing privileges (docs/cli.md).`);

program.parseAsync().catch((e: unknown) => {
  if (e instanceof CommanderError) {
    // commander has printed its message; help and version end with code 0.
    process.exitCode = e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    return;
  }
  const f = failure(e);
  console.error(`sluice: ${f.message}`);
  const verbose = program.opts<{ verbose?: boolean }>().verbose || !!process.env['SLUICE_DEBUG'];
  if (e instanceof VerifierError) {
    if (verbose) console.error(`\nverifier log of ${e.program ?? 'the program'}:\n${e.log}`);
    else console.error('(the whole verifier log: run again with --verbose)');
  }
  if (verbose && e instanceof Error) console.error(e.stack);
  process.exitCode = f.code;
});
