import { Option, type Command } from 'commander';
import { runDemo, summary } from '../../lab/demo';
import { parseDurationMs, parseRate } from '../../limiter/units';
import { parsed, printJson } from '../common';

export function register(program: Command): void {
  program
    .command('demo')
    .description('see Sluice work: a lab, three well-behaved clients and an abusive one, a live view, a live limit change')
    .addOption(new Option('--duration <duration>', 'how long the traffic runs, whole seconds from 4s to 1h (the limit changes half-way)').argParser(parsed((v) => {
      const ms = parseDurationMs(v, 'duration', 4000, 3_600_000);
      if (ms % 1000) throw new Error(`duration "${v}" must be whole seconds (the view refreshes once a second), e.g. ${Math.ceil(ms / 1000)}s`);
      return ms / 1000;
    })).default(20, '20s'))
    // The option before the one grammar of units: a bare number of seconds, said how to write now.
    .addOption(new Option('--seconds <n>').hideHelp().argParser(parsed((v) => {
      throw new Error(`--seconds is now --duration, with its unit: --duration ${/^\d+$/.test(v) ? v : '20'}s`);
    })))
    .option('--rate <n>', 'the limit per client, packets per second', parsed((v) => parseRate(v, 'rate')), 1000)
    .option('--rate-after <n>', 'the limit after the live change', parsed((v) => parseRate(v, 'rate after')), 500)
    .option('--abusive <pps>', 'what the abusive client offers, packets per second', parsed((v) => parseRate(v, 'abusive rate')), 50_000)
    .option('--plain', 'plain lines instead of a live view (for logs)')
    .option('--id <id>', 'lab id (two demos side by side need two)', 'demo')
    .option('--json', 'print the summary as JSON')
    .addHelpText('after', `
Everything happens in network namespaces the demo creates and removes (no route out); nothing
outside them is touched. Needs root. Takes about --duration plus a few seconds to set up.

Example:
  sluice demo
  sluice demo --duration 10s --plain`)
    .action(async (o: { duration: number; rate: number; rateAfter: number; abusive: number; plain?: boolean; json?: boolean; id: string }) => {
      const ac = new AbortController();
      const stop = (): void => ac.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      const live = !o.plain && !o.json && !!process.stdout.isTTY;
      const r = await runDemo({
        seconds: o.duration, rateBefore: o.rate, rateAfter: o.rateAfter, polite: [200, 300, 400], abusive: o.abusive,
        live, out: o.json ? () => undefined : (s) => process.stdout.write(s), signal: ac.signal, id: o.id,
      });
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
      if (o.json) printJson(r);
      else console.log(summary(r));
      if (r.interrupted) process.exitCode = 130;
    });
}
