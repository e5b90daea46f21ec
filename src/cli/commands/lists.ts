import type { Command } from 'commander';
import { Protection } from '../../agent/protection';
import { AgentCode, AgentError } from '../../agent/errors';
import { editRuntime, type ListName, type RuntimeLists } from '../../limiter/lists';
import { formatPrefix, parsePrefix } from '../../limiter/policy';
import { place, placeOptions, printJson, refuseIfManaged, type PlaceOptions } from '../common';

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

/** One list's share of the runtime layer. */
function runtimeOf(r: RuntimeLists | undefined, name: ListName): { add: string[]; del: string[] } {
  return { add: r?.add[name] ?? [], del: r?.del[name] ?? [] };
}

function describeRt(r: RuntimeLists | undefined, name: ListName): string {
  const rt = runtimeOf(r, name);
  if (!rt.add.length && !rt.del.length) return '';
  return ` (runtime layer, kept across \`policy apply\`: ${[...rt.add.map((c) => `+${c}`), ...rt.del.map((c) => `-${c}`)].join(', ')})`;
}

/** `sluice allow|deny|mgmt add|del|list`: the lists that decide before any limit. */
function registerList(program: Command, name: ListName, description: string): void {
  const group = program.command(name === 'mgmt' ? 'mgmt' : name).description(description).addHelpText('after', `
Changes take effect on the next packet, without a reload. A prefix covers every longer one inside it.
Edits are a runtime layer over the policy file's lists: \`sluice policy apply\` of a file keeps
them (\`--drop-runtime\` discards them); \`list\` marks them.

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
        refuseIfManaged(pl, `\`sluice ${name} ${verb}\``);
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
            // Kept apart from the file's lists: the next `policy apply` keeps this edit.
            return { lists, runtime: editRuntime(cur.runtime, name, verb, cidrs) };
          });
          if (o.json) printJson({ iface: o.iface, netns: o.netns ?? null, [name]: s.lists[name], runtime: runtimeOf(s.runtime, name) });
          else console.log(`${name} list of ${o.iface}: ${s.lists[name].join(', ') || '(empty)'}${describeRt(s.runtime, name)}`);
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
        if (o.json) printJson({ iface: o.iface, netns: o.netns ?? null, [name]: p.settings.lists[name], runtime: runtimeOf(p.settings.runtime, name) });
        else {
          const rt = runtimeOf(p.settings.runtime, name);
          console.log(p.settings.lists[name].map((c) => `${c}${rt.add.includes(c) ? '  (runtime)' : ''}`).join('\n') || '(empty)');
          if (rt.del.length) console.log(`removed at runtime from the policy file's list: ${rt.del.join(', ')}`);
        }
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
