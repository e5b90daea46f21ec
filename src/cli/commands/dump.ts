import type { Command } from 'commander';
import { dumpReport } from '../../agent/report';
import { Protection } from '../../agent/protection';
import { place, placeOptions, printJson, stateTable, type PlaceOptions } from '../common';

export function register(program: Command): void {
  const cmd = program
    .command('dump')
    .description('the per-client state map, decoded (addresses as text)')
    .addHelpText('after', `
Examples:
  sluice dump --iface eth1
  sluice dump --iface eth1 --json | jq '.entries | length'`);
  placeOptions(cmd)
    .option('--json', 'print JSON')
    .action(async (o: PlaceOptions & { json?: boolean }) => {
      const p = Protection.open(place(o));
      try {
        const entries = await dumpReport(p);
        if (o.json) return printJson({ iface: o.iface, netns: o.netns ?? null, entries });
        console.log(stateTable(entries));
        console.log(`(${entries.length} entries)`);
      } finally {
        p.close();
      }
    });
}
