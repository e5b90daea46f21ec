import type { Command } from 'commander';
import { topReport } from '../../agent/report';
import { Protection } from '../../agent/protection';
import { parseCount } from '../../limiter/units';
import { parsed, place, placeOptions, printJson, stateTable, type PlaceOptions } from '../common';

export function register(program: Command): void {
  const cmd = program
    .command('top')
    .description('the heaviest sources now: most of their limit in use, then most drops')
    .addHelpText('after', `
Columns: key (address/prefix, or * for a per-rule bucket), rule, algorithm, usage of the packet
limit now, packets available now, packets dropped, time since the last packet.

Examples:
  sluice top --iface eth1
  sluice top --iface eth1 -n 50 --json`);
  placeOptions(cmd)
    .option('-n, --count <n>', 'how many', parsed((v) => parseCount(v, 'count')), 20)
    .option('--json', 'print JSON')
    .action(async (o: PlaceOptions & { count: number; json?: boolean }) => {
      const p = Protection.open(place(o));
      try {
        const t0 = process.hrtime.bigint();
        const top = await topReport(p, o.count);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (o.json) return printJson({ iface: o.iface, netns: o.netns ?? null, read_ms: +ms.toFixed(1), top });
        console.log(stateTable(top));
        console.log(`(${top.length} shown; state map read in ${ms.toFixed(0)} ms)`);
      } finally {
        p.close();
      }
    });
}
