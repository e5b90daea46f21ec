import type { Command } from 'commander';
import { AgentCode, AgentError } from '../../agent/errors';
import { Protection } from '../../agent/protection';
import { place, placeOptions, printJson, type PlaceOptions } from '../common';

export function register(program: Command): void {
  const cmd = program
    .command('down')
    .description('detach from an interface and remove its pins')
    .addHelpText('after', `
Only that interface's protection is removed. An interface Sluice does not protect (a typo, an
unset variable, or already taken down) is an error with exit code 3, and nothing is removed;
\`sluice status\` lists what is protected.

Examples:
  sluice down --iface eth1
  sluice down --iface veth0 --netns lab`);
  placeOptions(cmd)
    .option('--json', 'print the result as JSON')
    .action(async (o: PlaceOptions & { json?: boolean }) => {
      const p = place(o);
      const was = await Protection.down(p);
      if (!was) {
        const at = `${p.iface}${p.netns ? ` in network namespace ${p.netns}` : ''}`;
        throw new AgentError(AgentCode.NotProtected, `${at} is not protected by Sluice, so nothing was removed (already taken down, or a misspelt name?); \`sluice status\` lists what is protected`);
      }
      if (o.json) printJson({ iface: p.iface, netns: p.netns, removed: true });
      else console.log(`${p.iface}${p.netns ? ` in ${p.netns}` : ''}: protection removed`);
    });
}
