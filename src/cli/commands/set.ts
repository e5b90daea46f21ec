import { Option, type Command } from 'commander';
import { Protection } from '../../agent/protection';
import { describeLimits, limitOptions, limitsJson, refuseIfManaged, limitsFrom, place, placeOptions, printJson, type LimitOptions, type PlaceOptions } from '../common';

export function register(program: Command): void {
  const cmd = program
    .command('set')
    .description('change limits, algorithm or key prefixes at runtime: the next packet obeys, no reload')
    .addHelpText('after', `
State is kept where it still means something; a change of algorithm or window starts each key
afresh on its next packet.

Examples:
  sluice set --iface eth1 --rate 200
  sluice set --iface eth1 --algorithm gcra --rate 100 --burst 20
  sluice set --iface eth1 --key-v4 24 --malformed drop`);
  placeOptions(cmd);
  limitOptions(cmd)
    .addOption(new Option('--malformed <verdict>', 'what to do with malformed packets').choices(['pass', 'drop']))
    .option('--json', 'print the result as JSON')
    .action(async (o: PlaceOptions & LimitOptions & { json?: boolean; packetLimit?: boolean; malformed?: 'pass' | 'drop' }) => {
      refuseIfManaged(place(o), '`sluice set`');
      const p = Protection.open(place(o));
      try {
        const s = await p.update({ limits: limitsFrom(o), ...(o.malformed ? { malformedDrop: o.malformed === 'drop' } : {}), ...(o.newStatesPerSec !== undefined ? { newStatesPerSec: o.newStatesPerSec } : {}) });
        if (o.json) printJson({ iface: s.iface, netns: s.netns, limits: limitsJson(s.limits), malformed: s.malformedDrop ? 'drop' : 'pass', new_states_per_sec: s.newStatesPerSec ?? 0, version: p.limiter.version() });
        else console.log(`${s.iface}: ${describeLimits(s.limits)} (policy version ${p.limiter.version()})`);
      } finally {
        p.close();
      }
    });
}
