import { Option, type Command } from 'commander';
import { assertMgmtKept } from '../../agent/errors';
import { Protection } from '../../agent/protection';
import { layered, mgmtDropped } from '../../limiter/lists';
import { loadSettings, policyContent } from '../../agent/state';
import { loadPolicy } from '../../config/policy-file';
import { policySize, Progress } from '../terminal';
import { describeLimits, limitOptions, limitsJson, refuseIfManaged, limitsFrom, parsed, place, placeOptions, printJson, type LimitOptions, type PlaceOptions } from '../common';
import { parseCount } from '../../limiter/units';
import { MAX_MAX_ENTRIES, MAX_MAX_RULES } from '../../config/schema';

interface UpOpts extends PlaceOptions, LimitOptions {
  mode: 'auto' | 'native' | 'generic';
  maxEntries?: number;
  maxRules?: number;
  maxListEntries?: number;
  object?: string;
  resetState?: boolean;
  allowMgmtShrink?: boolean;
  policy?: string;
  egress?: boolean;
  json?: boolean;
  packetLimit?: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command('up')
    .description('protect an interface: load, attach (XDP link), pin, set limits; or adopt what is pinned')
    .addHelpText('after', `
Protection stays in force after the command exits. Running up again on a protected interface
adopts its pins (state and counters kept), replaces the program atomically if it changed, and
applies the limits given.

Examples:
  sluice up --iface eth1 --rate 1000
  sluice up --iface veth0 --netns lab --algorithm token --rate 500 --burst 50
  sluice up --iface eth1 --rate 10k --bytes-rate 50MB --key-v4 24 --key-v6 48
  sluice up --iface eth1 --max-entries 1000000 --reset-state`);
  placeOptions(cmd);
  limitOptions(cmd);
  cmd
    .addOption(new Option('--mode <mode>', 'XDP mode; auto tries native, then generic').choices(['auto', 'native', 'generic']).default('auto'))
    .option('--max-entries <n>', `per-client state entries (LRU), fixed at load: 16 to 2^28 (${MAX_MAX_ENTRIES}); e.g. 100k, 1M`, parsed((v) => parseCount(v, 'max entries', 16, MAX_MAX_ENTRIES)))
    .option('--max-rules <n>', `rule slots, fixed at load: 2 to ${MAX_MAX_RULES}`, parsed((v) => parseCount(v, 'max rules', 2, MAX_MAX_RULES)))
    .option('--max-list-entries <n>', 'entries the compiled allow/deny/management lists may have, fixed at load (default 65536; at most 16M)', parsed((v) => parseCount(v, 'max list entries', 1, 1 << 24)))
    .option('--object <path>', 'the BPF object to load (default: bpf/sluice.bpf.o)')
    .option('--policy <file>', 'a policy file (rules, lists, GeoIP tiers; see docs/policy.md); limits on the command line override its defaults')
    .option('--allow-mgmt-shrink', 'with --policy on a protected interface: allow the file to take prefixes out of the management allowlist')
    .option('--egress', 'also enforce at tc egress (implied by a policy with egress rules)')
    .option('--reset-state', 'discard pinned state and counters, start afresh')
    .option('--json', 'print the result as JSON')
    .action(async (o: UpOpts) => {
      refuseIfManaged(place(o), '`sluice up`');
      const prior = loadSettings(place(o));
      const progress = new Progress();
      if (o.policy) progress.start(`reading and checking ${o.policy}`);
      const pf = o.policy ? loadPolicy(o.policy, prior?.ruleIds ?? {}, o.maxRules ?? prior?.maxRules) : undefined;
      if (pf) progress.end(policySize(pf));
      // Runtime list edits stay over the file's lists, as with `policy apply`.
      const lists = pf ? layered(pf.lists, prior?.runtime) : undefined;
      if (lists) assertMgmtKept(mgmtDropped(prior?.lists.mgmt ?? [], lists.mgmt), o.iface, o.allowMgmtShrink);
      progress.start(`loading the data path and writing ${pf ? 'the policy' : 'the limits'} to the kernel`);
      const r = await Protection.up({
        ...place(o),
        ...(pf ? { ...policyContent(pf), lists: lists!, policyFile: pf.file } : {}),
        ...(o.egress ? { egress: true } : {}),
        mode: o.mode,
        ...(o.maxEntries !== undefined ? { maxEntries: o.maxEntries } : {}),
        ...(o.maxRules !== undefined ? { maxRules: o.maxRules } : {}),
        ...(o.maxListEntries !== undefined ? { maxListEntries: o.maxListEntries } : {}),
        ...(o.object !== undefined ? { object: o.object } : {}),
        ...(o.newStatesPerSec !== undefined ? { newStatesPerSec: o.newStatesPerSec } : {}),
        resetState: !!o.resetState,
        limits: { ...pf?.limits, ...limitsFrom(o) },
      });
      progress.end(r.action);
      const p = r.protection;
      try {
        for (const w of r.warnings) console.error(`warning: ${w}`);
        const prog = p.programInfo();
        if (o.json) {
          printJson({ action: r.action, iface: p.settings.iface, netns: p.settings.netns, ifindex: p.settings.ifindex, mode: p.settings.mode, program_id: prog.id, limits: limitsJson(p.settings.limits), new_states_per_sec: p.settings.newStatesPerSec ?? 0, warnings: r.warnings });
          return;
        }
        console.log(`${r.action} ${p.settings.iface}${p.settings.netns ? ` in ${p.settings.netns}` : ''} (ifindex ${p.settings.ifindex}, ${p.settings.mode} XDP, program ${prog.id})`);
        console.log(`limit: ${describeLimits(p.settings.limits)}`);
      } finally {
        p.close();
      }
    });
}
