import type { Command } from 'commander';
import { Protection } from '../../agent/protection';
import { AgentCode, AgentError } from '../../agent/errors';
import type { ListName } from '../../limiter/lists';
import { formatPrefix, parsePrefix } from '../../limiter/policy';
import { place, placeOptions, printJson, type PlaceOptions } from '../common';

/**
 * A prefix as the lists store it: "192.0.2.1" is "192.0.2.1/32", "2001:DB8:0::1" is
 * "2001:db8::1/128". Edits compare these, so that `del` removes what `add` stored.
 */
function canonical(cidrs: string[]): string[] {
  return [...new Set(cidrs.map((c) => {
    try {
      return formatPrefix(parsePrefix(c));
    } catch (e) {
      throw new AgentError(AgentCode.InvalidArgument, (e as Error).message);
    }
  }))];
}

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
      .action(async (given: string[], o: PlaceOptions & { json?: boolean }) => {
        const pl = place(o);
        const cidrs = canonical(given); // an invalid prefix is exit code 2 before anything is opened
        const p = Protection.open(pl);
        try {
          // Read and changed under the interface's lock: concurrent edits never lose one another.
          const s = await p.update((cur) => {
            const lists = { ...cur.lists };
            const had = cur.lists[name];
            const missing = verb === 'del' ? cidrs.filter((c) => !had.includes(c)) : [];
            // Nothing is removed when one of them is absent: a typo must not pass for done.
            if (missing.length) throw new AgentError(AgentCode.NotInList, `not in the ${name} list of ${o.iface}: ${missing.join(', ')}, so nothing was removed (the list holds: ${had.join(', ') || 'nothing'})`);
            lists[name] = verb === 'add' ? [...lists[name], ...cidrs] : lists[name].filter((c) => !cidrs.includes(c));
            return { lists };
          });
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
