import { Option, type Command } from 'commander';
import { openAll, statsReport, takeSnapshot, type StatsReport } from '../../agent/report';
import { Protection } from '../../agent/protection';
import { parseDurationMs } from '../../limiter/units';
import { human, num, parsed, printJson, table } from '../common';
import type { Snapshot } from '../../limiter/stats';
import { History, screen, sparkline, type Screen } from '../terminal';

interface StatsOpts { iface?: string; netns?: string; watch?: number; json?: boolean; sample: number }

/** The last minute of one interface's rates, for the sparklines of --watch on a terminal. */
interface Trend { allowed: History; dropped: History }

function render(r: StatsReport, limit: string, scr?: Screen, trend?: Trend): string {
  const rate = (x: number | undefined): string => (x === undefined ? '-' : num(x));
  const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
  const paint = scr ? scr.paint : (x: string): string => x;
  const dropNow = r.rates ? pct(r.rates.drop_rate) : '-';
  const lines = [
    `${r.iface}${r.netns ? ` (netns ${r.netns})` : ''}  ${limit}`,
    table([
      ['allowed', num(r.allowed_packets), human(r.allowed_bytes), rate(r.rates?.allowed_pps)],
      ['dropped', num(r.dropped_packets), human(r.dropped_bytes), rate(r.rates?.dropped_pps)],
    ], ['', 'packets', 'bytes', 'now pkt/s']),
    `drop rate now ${r.rates && r.rates.dropped_pps > 0 ? paint(dropNow, 'red') : dropNow}, since attach ${pct(r.drop_rate)}   new states ${num(r.new_states)}${r.rates ? ` (${num(r.rates.new_states_per_sec)}/s)` : ''}`,
    ...(trend ? [
      `allowed/s, last minute ${paint(sparkline(trend.allowed.values()), 'green')}`,
      `dropped/s, last minute ${paint(sparkline(trend.dropped.values()), 'red')}`,
    ] : []),
    '',
    table(r.rules.map((x) => [`${x.id}${x.name ? ` ${x.name}` : ''}`, num(x.allowed_packets), num(x.dropped_packets), num(x.new_states)]), ['rule', 'allowed', 'dropped', 'new states']),
    '',
    `reasons: ${Object.entries(r.reasons).map(([k, v]) => `${k} ${num(v.packets)}`).join(' · ') || 'none yet'}`,
  ];
  return lines.join('\n');
}

export function register(program: Command): void {
  program
    .command('stats')
    .description('allowed and dropped packets and bytes, drop rate, current rates, per rule and reason')
    .option('-i, --iface <name>', 'the interface (default: every protected interface)')
    .option('--netns <name>', 'the network namespace of the interface')
    .option('-w, --watch <duration>', 'refresh at this interval until Ctrl-C (e.g. 2s, 500ms): in place on a terminal, a block a time when piped, one object a line with --json', parsed((v) => parseDurationMs(v, 'watch interval', 100) / 1000))
    .addOption(new Option('--sample <duration>', 'time between the two readings that give current rates (e.g. 500ms, 2s; 0: none)').argParser(parsed((v) => parseDurationMs(v, 'sample', 0, 3_600_000))).default(1000, '1s'))
    .option('--json', 'print JSON (totals since attach: allowed_packets, dropped_packets, allowed_bytes, dropped_bytes, …; drop_rate since attach, rates.drop_rate now)')
    .addHelpText('after', `
Examples:
  sluice stats --iface eth1
  sluice stats --iface eth1 --watch 2s
  sluice stats --iface eth1 --sample 500ms
  sluice stats --json`)
    .action(async (o: StatsOpts) => {
      const ps = o.iface ? [Protection.open({ iface: o.iface, netns: o.netns ?? null })] : openAll();
      const limitText = (p: Protection): string => `${p.settings.mode} XDP, ${p.settings.limits.algorithm}, ${p.settings.limits.rate ?? '-'} pkt/s`;
      try {
        const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
        let prev: Snapshot[] = ps.map(takeSnapshot);
        if (!o.watch) {
          if (o.sample > 0) await sleep(o.sample);
          const reports = ps.map((p, i) => statsReport(p, takeSnapshot(p), o.sample > 0 ? prev[i] : undefined));
          if (o.json) printJson(o.iface ? reports[0] : { interfaces: reports });
          else console.log(reports.map((r, i) => render(r, limitText(ps[i]!))).join('\n\n') || 'no interface is protected');
          return;
        }
        let stop = false;
        process.once('SIGINT', () => { stop = true; });
        const scr = screen();
        const trends: Trend[] = ps.map(() => ({ allowed: new History(), dropped: new History() }));
        while (!stop) {
          await sleep(o.watch * 1000);
          const cur = ps.map(takeSnapshot);
          const reports = ps.map((p, i) => statsReport(p, cur[i]!, prev[i]));
          prev = cur;
          // One object a line, so that `| jq -c` and `| head -n 3` see whole objects.
          if (o.json) { process.stdout.write(JSON.stringify(o.iface ? reports[0] : { interfaces: reports }) + '\n'); continue; }
          reports.forEach((r, i) => { trends[i]!.allowed.add(r.rates?.allowed_pps ?? 0); trends[i]!.dropped.add(r.rates?.dropped_pps ?? 0); });
          const head = `${new Date().toISOString()}  (every ${o.watch}s${scr.tty ? ', Ctrl-C to stop' : ''})`;
          scr.frame(`${head}\n\n${reports.map((r, i) => render(r, limitText(ps[i]!), scr, scr.tty ? trends[i] : undefined)).join('\n\n')}`);
        }
      } finally {
        ps.forEach((p) => p.close());
      }
    });
}
