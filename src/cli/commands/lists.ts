import type { Command } from 'commander';
import { Protection } from '../../agent/protection';
import type { ListName } from '../../limiter/lists';
import { place, placeOptions, printJson, type PlaceOptions } from '../common';

/** `sluice allow|deny|mgmt add|del|list`: the lists that decide before any limit. */
function registerList(program: Command, name: ListName, description: string): void {
  const group = program.command(name === 'mgmt' ? 'mgmt' : name).description(description).addHelpText('after', `
Changes take effect on the next packet, without a reload. A prefix covers every longer one inside it.

Examples:
  sluice ${name} add --iface eth1 192.0.2.0/24 2001:db8::/32
  sluice ${name} del --iface eth1 192.0.2.0/24
  sluice ${name} list --iface eth1 --json`);
  const change = (verb: 'add' | 'del'): void => {
    placeOptions(group.command(`${verb} <cidr...>`).description(`${verb === 'add' ? 'add prefixes to' : 'remove prefixes from'} the ${name} list`))
      .option('--json', 'print the list as JSON')
      .action(async (cidrs: string[], o: PlaceOptions & { json?: boolean }) => {
        const p = Protection.open(place(o));
        try {
          // Read and changed under the interface's lock: concurrent edits never lose one another.
          let missing: string[] = [];
          let had: string[] = [];
          const s = await p.update((cur) => {
            const lists = { ...cur.lists };
            had = cur.lists[name];
            missing = verb === 'del' ? cidrs.filter((c) => !had.includes(c)) : [];
            lists[name] = verb === 'add' ? [...lists[name], ...cidrs] : lists[name].filter((c) => !cidrs.includes(c));
            return { lists };
          });
          if (missing.length) console.error(`warning: not in the ${name} list: ${missing.join(', ')} (the list held: ${had.join(', ') || 'nothing'})`);
          if (o.json) printJson({ iface: o.iface, netns: o.netns ?? null, [name]: s.lists[name] });
          else console.log(`${name} list of ${o.iface}: ${s.lists[name].join(', ') || '(empty)'}`);
        } finally {
          p.close();
        }
      });
  };
  change('add');
  change('del');
  placeOptions(group.command('list').description(`show the ${name} list`))
    .option('--json', 'print JSON')
    .action((o: PlaceOptions & { json?: boolean }) => {
      const p = Protection.open(place(o));
      try {
        if (o.json) printJson({ iface: o.iface, netns: o.netns ?? null, [name]: p.settings.lists[name] });
        else console.log(p.settings.lists[name].join('\n') || '(empty)');
      } finally {
        p.close();
      }
    });
}

export function register(program: Command): void {
  registerList(program, 'allow', 'allowlist: sources that pass before any limit');
  registerList(program, 'deny', 'denylist: sources that are dropped before any limit');
  registerList(program, 'mgmt', 'management allowlist: sources no rule or list can drop (where you manage the machine from)');
}
