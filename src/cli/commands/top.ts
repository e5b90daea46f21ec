import type { Command } from 'commander';
import { topReport } from '../../agent/report';
import { Protection } from '../../agent/protection';
import { parseCount, parseDurationMs } from '../../limiter/units';
import { parsed, place, placeOptions, printJson, stateTable, type PlaceOptions } from '../common';
import { screen } from '../terminal';

export function register(program: Command): void {
  const cmd = program
    .command('top')
    .description('the heaviest sources now: most of their limit in use, then most drops')
    .addHelpText('after', `
Columns: key (address/prefix, or * for a per-rule bucket), rule, algorithm, usage of the packet
limit now, packets available now, packets dropped, time since the last packet.

Examples:
  sluice top --iface eth1
  sluice top --iface eth1 -n 50 --json
  sluice top --iface eth1 --watch 2s`);
  placeOptions(cmd)
    .option('-n, --count <n>', 'how many', parsed((v) => parseCount(v, 'count')), 20)
    .option('--json', 'print JSON (with --watch: one object a line)')
    .option('-w, --watch <duration>', 'refresh at this interval until Ctrl-C (e.g. 2s): in place on a terminal, a block a time when piped', parsed((v) => parseDurationMs(v, 'watch interval', 100)))
    .action(async (o: PlaceOptions & { count: number; json?: boolean; watch?: number }) => {
      const p = Protection.open(place(o));
      try {
        const read = async (): Promise<{ top: Awaited<ReturnType<typeof topReport>>; ms: number }> => {
          const t0 = process.hrtime.bigint();
          const top = await topReport(p, o.count);
          return { top, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
        };
        if (!o.watch) {
          const { top, ms } = await read();
          if (o.json) return printJson({ iface: o.iface, netns: o.netns ?? null, read_ms: +ms.toFixed(1), top });
          console.log(stateTable(top));
          console.log(`(${top.length} shown; state map read in ${ms.toFixed(0)} ms)`);
          return;
        }
        let stop = false;
        process.once('SIGINT', () => { stop = true; });
        const scr = screen();
        while (!stop) {
          const { top, ms } = await read();
          if (o.json) process.stdout.write(JSON.stringify({ iface: o.iface, netns: o.netns ?? null, at: new Date().toISOString(), read_ms: +ms.toFixed(1), top }) + '\n');
          else scr.frame(`${new Date().toISOString()}  ${o.iface}: the heaviest ${top.length} (every ${o.watch / 1000}s${scr.tty ? ', Ctrl-C to stop' : ''})\n\n${stateTable(top)}`);
          await new Promise((r) => setTimeout(r, o.watch));
        }
      } finally {
        p.close();
      }
    });
}
