/**
 * The `sluice` command. One module per subcommand under src/cli/commands/, each thin over
 * agent / limiter / lab; this file only assembles them and turns errors into exit codes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { COMMANDS } from './commands';
import { VerifierError } from '../ebpf';
import { EXIT, failure } from './common';
import { settleDueRollback } from './due-rollback';

/** The version of the package this file was installed with (dist/src/cli/ is three levels below it). */
const VERSION = (JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

const program = new Command();
program
  .name('sluice')
  .description('Per-client rate limiting in the kernel (XDP), run from user space')
  .version(VERSION)
  .option('-v, --verbose', 'on failure, print everything known: the whole verifier log, the stack')
  .showHelpAfterError()
  .exitOverride();
for (const register of COMMANDS) register(program);
program.hook('preAction', (_cmd, action) => settleDueRollback(action));
program.commands.forEach((c) => c.exitOverride());

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
