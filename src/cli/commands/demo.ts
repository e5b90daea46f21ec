import { Option, type Command } from 'commander';
import { runDemo, summary } from '../demo';
import { httpSummary, runHttpDemo, type RoundKind } from '../demo-http';
import { parsePageCpu } from '../../lab/lab';
import { parseDurationMs, parseRate } from '../../limiter/units';
import { parsed, printJson } from '../common';

/** Requests per second of each well-behaved client: "25,30,30,35". */
function parseUsers(v: string): number[] {
  const rates = v.split(',').map((s) => Number(s.trim()));
  if (rates.length < 1 || rates.length > 8 || rates.some((r) => !Number.isInteger(r) || r < 1 || r > 1000)) {
    throw new Error(`users "${v}" must be 1 to 8 request rates per second, whole numbers from 1 to 1000, separated by commas (e.g. 25,30,30,35)`);
  }
  return rates;
}

interface DemoCliOptions {
  http?: boolean;
  duration: number;
  rate: number;
  rateAfter: number;
  burst?: number;
  abusive: number;
  pageCpu: number;
  users: number[];
  connections: number;
  round: 'both' | RoundKind;
  timeout: number;
  plain?: boolean;
  json?: boolean;
  id?: string;
}

export function register(program: Command): void {
  program
    .command('demo')
    .description('see Sluice work: a lab, three well-behaved clients and an abusive one, a live view, a live limit change (--http: a web server kept usable under a flood)')
    .option('--http', 'the web scene: an HTTP server whose page costs CPU, well-behaved clients timing each request, an abusive client flooding it; three phases (no abuser, abuser without Sluice, abuser with Sluice) for an HTTP flood and for a packet flood')
    .addOption(new Option('--duration <duration>', 'how long the traffic runs, whole seconds from 4s to 1h (the limit changes half-way); with --http, how long each phase is measured, 2s to 1m (with --http the default is 5s)').argParser(parsed((v) => {
      const ms = parseDurationMs(v, 'duration', 2000, 3_600_000);
      if (ms % 1000) throw new Error(`duration "${v}" must be whole seconds (the view refreshes once a second), e.g. ${Math.ceil(ms / 1000)}s`);
      return ms / 1000;
    })).default(20, '20s'))
    // The option before the one grammar of units: a bare number of seconds, said how to write now.
    .addOption(new Option('--seconds <n>').hideHelp().argParser(parsed((v) => {
      throw new Error(`--seconds is now --duration, with its unit: --duration ${/^\d+$/.test(v) ? v : '20'}s`);
    })))
    .option('--rate <n>', 'the limit per client, packets per second (with --http the default is 50)', parsed((v) => parseRate(v, 'rate')), 1000)
    .option('--rate-after <n>', 'the limit after the live change (not with --http)', parsed((v) => parseRate(v, 'rate after')), 500)
    .option('--burst <n>', 'with --http: the burst of the limit, packets (default 6)', parsed((v) => parseRate(v, 'burst')))
    .option('--abusive <pps>', 'what the abusive client offers, packets per second (with --http: the packet flood\'s first rate; the default there is the generator\'s full speed)', parsed((v) => parseRate(v, 'abusive rate')), 50_000)
    .addOption(new Option('--page-cpu <time>', 'with --http: CPU each page costs (e.g. 1ms, 500us)').argParser(parsed(parsePageCpu)).default(1000, '1ms'))
    .addOption(new Option('--users <rates>', 'with --http: requests per second of each well-behaved client').argParser(parsed(parseUsers)).default([25, 30, 30, 35], '25,30,30,35'))
    .option('--connections <n>', 'with --http: connections of the abusive HTTP client (raised with a second process if they do not hurt)', parsed((v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new Error(`connections "${v}" must be a whole number from 1 to 10000`);
      return n;
    }), 256)
    .addOption(new Option('--round <round>', 'with --http: which floods').choices(['both', 'http', 'packet']).default('both'))
    .addOption(new Option('--timeout <duration>', 'with --http: a request not answered within this fails').argParser(parsed((v) => parseDurationMs(v, 'timeout', 100, 60_000))).default(2000, '2s'))
    .option('--plain', 'plain lines instead of a live view (for logs)')
    .option('--id <id>', 'lab id (two demos side by side need two; default demo, with --http demoweb)')
    .option('--json', 'print the summary as JSON')
    .addHelpText('after', `
Everything happens in network namespaces the demo creates and removes (no route out); nothing
outside them is touched. Needs root. Takes about --duration plus a few seconds to set up; with
--http about a minute (six phases of 5 s, Sluice loaded once, and a raise for each flood that
does not hurt).

With --http, a flood hurts when the well-behaved clients' p99 reaches 5x the baseline's or fewer
than 90% of their requests are answered; Sluice keeps the server usable when, under the flood,
their p99 stays within 2x the baseline's and 99% or more are answered.

Example:
  sluice demo
  sluice demo --duration 10s --plain
  sluice demo --http
  sluice demo --http --round http --page-cpu 2ms --json`)
    .action(async (o: DemoCliOptions, cmd: Command) => {
      const ac = new AbortController();
      const stop = (): void => ac.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      const out = o.json ? () => undefined : (s: string) => void process.stdout.write(s);
      const given = (name: string): boolean => cmd.getOptionValueSource(name) === 'cli';
      try {
        if (o.http) {
          if (given('duration') && o.duration > 60) cmd.error(`error: option '--duration <duration>' argument '${o.duration}s' is invalid. with --http, each phase is measured for at most 1m`, { exitCode: 2 });
          if (given('rateAfter')) cmd.error('error: --rate-after belongs to the packet scene (without --http): the web scene keeps one limit (--rate, --burst)', { exitCode: 2 });
          const r = await runHttpDemo({
            pageCpuUs: o.pageCpu, users: o.users, connections: o.connections, phaseS: given('duration') ? o.duration : 5, timeoutMs: o.timeout,
            rounds: o.round === 'both' ? ['http', 'packet'] : [o.round], out, signal: ac.signal,
            ...(given('rate') ? { rate: o.rate } : {}), ...(o.burst !== undefined ? { burst: o.burst } : {}),
            ...(given('abusive') ? { floodPps: o.abusive } : {}), ...(o.id !== undefined ? { id: o.id } : {}),
          });
          if (o.json) printJson(r);
          else console.log(httpSummary(r));
          if (r.interrupted) process.exitCode = 130;
          return;
        }
        for (const [flag, name] of [['--burst', 'burst'], ['--page-cpu', 'pageCpu'], ['--users', 'users'], ['--connections', 'connections'], ['--round', 'round'], ['--timeout', 'timeout']] as const) {
          if (given(name)) cmd.error(`error: ${flag} belongs to the web scene: add --http`, { exitCode: 2 });
        }
        const seconds = o.duration;
        if (seconds < 4) cmd.error(`error: option '--duration <duration>' argument '${seconds}s' is invalid. duration must be at least 4s (the limit changes half-way)`, { exitCode: 2 });
        const live = !o.plain && !o.json && !!process.stdout.isTTY;
        const r = await runDemo({
          seconds, rateBefore: o.rate, rateAfter: o.rateAfter, polite: [200, 300, 400], abusive: o.abusive,
          live, out, signal: ac.signal, id: o.id ?? 'demo',
        });
        if (o.json) printJson(r);
        else console.log(summary(r));
        if (r.interrupted) process.exitCode = 130;
      } finally {
        process.removeListener('SIGINT', stop);
        process.removeListener('SIGTERM', stop);
      }
    });
}
