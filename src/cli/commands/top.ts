import type { Command } from 'commander';
import { liveRules, withRates, type TopReport } from '../../agent/report';
import { AgentCode, AgentError } from '../../agent/errors';
import { Protection } from '../../agent/protection';
import { alignReadings, CLOCK_LAG_NS, RateTracker, type ReadingPlan } from '../../limiter/rates';
import { SHARED_TOP, walkStates, type StateWalk } from '../../limiter/top';
import { formatDurationMs, parseCount, parseDurationMs } from '../../limiter/units';
import { parsed, place, placeOptions, printJson, topTable, type PlaceOptions } from '../common';
import { screen } from '../terminal';

/** What a line under the table says the pps figure is. */
export function rateLegend(r: TopReport, plan?: ReadingPlan | null, why?: string): string {
  if (why) return `pps: not measured (${why})`;
  if (!r.rate) return 'pps: not measured yet (the first reading)';
  const a = plan?.aligned;
  const where = !a ? '' : a.window_ms !== null ? `, within one ${formatDurationMs(a.window_ms)} window of rule ${a.rule} (${a.algorithm})`
    : `, shorter than the ${formatDurationMs(a.depth_ms!)} bucket of rule ${a.rule} (${a.algorithm})`;
  return `pps: packets/s decided for the key over the last ${r.rate.seconds.toFixed(2)} s${where} (passed + dropped by its limit); ` +
    'a-b: only bounds are known (a bucket that may have filled, a window change not read); ' +
    '?: not known (a first reading, a key re-initialised or evicted)';
}

export function register(program: Command): void {
  const cmd = program
    .command('top')
    .description('the heaviest sources now: most of their limit in use, then most drops; with each one\'s packets/s')
    .addHelpText('after', `
Columns: key (address/prefix, or * for a per-rule bucket), rule, algorithm, usage of the packet
limit now, packets available now, packets dropped, time since the last packet, and pps: the packets
per second decided for the key over the interval (passed + dropped by its limit), from two readings
of its state --interval apart (with --watch: consecutive frames). The state keeps no pass counter,
so passes are read off its algorithm's word: exact for a key over its limit, a sliding window, a
fixed window read within one window; a range ("120-1,000") where the word cannot say (a token
bucket or GCRA key under its limit sits at a full bucket); "?" when not known (a first reading, a
key re-initialised or evicted).

Examples:
  sluice top --iface eth1
  sluice top --iface eth1 -n 50 --json
  sluice top --iface eth1 --interval 2s
  sluice top --iface eth1 --watch 2s`);
  placeOptions(cmd)
    .option('-n, --count <n>', 'how many', parsed((v) => parseCount(v, 'count')), 20)
    .option('--json', 'print JSON (with --watch: one object a line)')
    .option('--interval <duration>', 'time between the two readings that give pps (0: one reading, no pps); not with --watch', parsed((v) => parseDurationMs(v, 'interval', 0, 60_000)), 1000)
    .option('-w, --watch <duration>', 'refresh at this interval until Ctrl-C (e.g. 2s): in place on a terminal, a block a time when piped', parsed((v) => parseDurationMs(v, 'watch interval', 100)))
    .action(async (o: PlaceOptions & { count: number; json?: boolean; watch?: number; interval: number }, c: Command) => {
      if (o.watch && c.getOptionValueSource('interval') === 'cli') {
        throw new AgentError(AgentCode.InvalidArgument, '--interval is the time between the two readings of a single top; with --watch, pps is over the time between frames (--watch D): leave out --interval');
      }
      if (o.interval > 0 && o.interval < 100) throw new AgentError(AgentCode.InvalidArgument, `--interval ${o.interval}ms is too short to measure a rate: give 100ms or more (or 0 for no pps)`);
      const p = Protection.open(place(o));
      try {
        // Rates need an earlier reading of the keys shown: each walk keeps more than it shows.
        const keep = Math.min(SHARED_TOP, Math.max(o.count * 4, 200));
        const walk = (n: number): Promise<StateWalk> => walkStates(p.limiter.maps, liveRules(p), n);
        const ms = (w: StateWalk): number => +(Number(w.t1 - w.t0) / 1e6).toFixed(1);
        const tracker = new RateTracker();
        if (!o.watch) {
          let plan: ReadingPlan | null = null;
          let why: string | undefined;
          if (o.interval > 0) {
            // A first look at the heaviest, to place the readings in the window of their rule.
            const w0 = await walk(keep);
            const margin = CLOCK_LAG_NS + 2n * (w0.t1 - w0.t0) + 20_000_000n;
            plan = alignReadings(w0.rules, w0.top.slice(0, o.count).map((e) => e.rule), BigInt(o.interval) * 1_000_000n, process.hrtime.bigint(), margin);
            // No wait: the first look is the first reading.
            if (plan.waitNs > 0n) await sleep(Number(plan.waitNs / 1_000_000n));
            const w1 = plan.waitNs > 0n ? await walk(keep) : w0;
            tracker.observe(w1, w1.rules);
            const left = Number(plan.intervalNs - (process.hrtime.bigint() - (w1.t0 + w1.t1) / 2n)) / 1e6;
            if (left > 0) await sleep(left);
          } else why = '--interval 0';
          const w = await walk(o.count);
          const r = withRates(w, tracker);
          if (o.json) return printJson({ iface: o.iface, netns: o.netns ?? null, read_ms: ms(w), rate: r.rate, aligned: plan?.aligned ?? null, top: r.top });
          console.log(topTable(r.top));
          console.log(`(${r.top.length} shown; state map read in ${ms(w).toFixed(0)} ms)`);
          console.log(rateLegend(r, plan, why));
          return;
        }
        let stop = false;
        process.once('SIGINT', () => { stop = true; });
        const scr = screen();
        while (!stop) {
          const w = await walk(keep);
          const r = withRates(w, tracker, o.count);
          if (o.json) process.stdout.write(JSON.stringify({ iface: o.iface, netns: o.netns ?? null, at: new Date().toISOString(), read_ms: ms(w), rate: r.rate, top: r.top }) + '\n');
          else scr.frame(`${new Date().toISOString()}  ${o.iface}: the heaviest ${r.top.length} (every ${o.watch / 1000}s${scr.tty ? ', Ctrl-C to stop' : ''})\n\n${topTable(r.top, scr.paint)}\n${rateLegend(r)}`);
          await sleep(o.watch);
        }
      } finally {
        p.close();
      }
    });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
