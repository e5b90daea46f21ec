import type { Command } from 'commander';
import { Protection } from '../../agent/protection';
import { place, placeOptions, printJson, type PlaceOptions } from '../common';

export function register(program: Command): void {
  const cmd = program
    .command('down')
    .description('detach from an interface and remove its pins (idempotent)')
    .addHelpText('after', `
Examples:
  sluice down --iface eth1
  sluice down --iface veth0 --netns lab`);
  placeOptions(cmd)
    .option('--json', 'print the result as JSON')
    .action(async (o: PlaceOptions & { json?: boolean }) => {
      const was = await Protection.down(place(o));
      if (o.json) printJson({ iface: o.iface, netns: o.netns ?? null, removed: was });
      else console.log(was ? `${o.iface}: protection removed` : `${o.iface}: was not protected (nothing to do)`);
    });
}
