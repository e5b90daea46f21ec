/**
 * The `sluice` command. One module per subcommand under src/cli/commands/, each thin over
 * agent / limiter / lab; this file only assembles them.
 */
import { Command } from 'commander';
import { COMMANDS } from './commands';

const program = new Command();
program
  .name('sluice')
  .description('Per-client rate limiting in the kernel (XDP), run from user space')
  .version('0.1.0')
  .showHelpAfterError();
for (const register of COMMANDS) register(program);
program.parseAsync().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});
