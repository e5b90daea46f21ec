import { Option, type Command } from 'commander';
import { defaultRuleOf } from '../../config/load';
import { describePending, summarizePending, type Pending } from '../../agent/pending';
import { geoOf, Protection, type UpResult } from '../../agent/protection';
import { applyWithRollback, confirm, rollbackNow, runAgent } from '../../agent/rollback';
import { loadSettings, policyContent } from '../../agent/state';
import { loadPolicy, PROTOCOLS, type PolicyFile } from '../../config/policy-file';
import { GEOIP_ATTRIBUTION } from '../../limiter/geoip';
import { mapOf } from '../../limiter/datapath';
import { compileLists, describeRuntime, emptyRuntime, layered, mgmtDropped, runtimeIsEmpty } from '../../limiter/lists';
import { assertMgmtKept } from '../../agent/errors';
import { compilePolicy, formatPrefix } from '../../limiter/policy';
import { REASON_NAMES } from '../../limiter/stats';
import { parseCount, parseDurationMs } from '../../limiter/units';
import { MAX_MAX_RULES } from '../../config/schema';
import { describeLimits, human, limitsJson, num, parsed, place, placeOptions, printJson, refuseIfManaged, table, type PlaceOptions } from '../common';
import { policySize, Progress } from '../terminal';
import { formatRate } from '../../limiter/units';

/**
 * Kernel memory of an sl_geo entry, as the kernel's own accounting reports it (fdinfo memlock of
 * the LPM trie, measured on 6.18 with 10,000 to 116,000 entries: 52 bytes each).
 */
const LPM_BYTES_PER_ENTRY = 52;

function policyOfFile(pf: PolicyFile) {
  return [defaultRuleOf(pf.limits), ...pf.rules];
}

/** Protocol numbers by the names a policy file writes. */
const PROTO_NAMES = new Map(Object.entries(PROTOCOLS).map(([k, v]) => [v, k]));

/** Tier ids as parsePolicy assigns them (the order of `tiers`, then the default tier as 255), by name. */
function tierNames(pf: PolicyFile): Map<number, string> {
  const m = new Map<number, string>();
  if (!pf.geoip) return m;
  Object.keys(pf.geoip.tiers).forEach((name, i) => m.set(i + 1, name));
  m.set(255, pf.geoip.defaultTier);
  return m;
}

function describeMatch(r: PolicyFile['rules'][number], tiers: Map<number, string>): string {
  const parts: string[] = [];
  if (r.src) parts.push(`src ${[r.src].flat().join(',')}`);
  if (r.dst) parts.push(`dst ${[r.dst].flat().join(',')}`);
  if (r.proto) parts.push(`proto ${PROTO_NAMES.get(r.proto) ?? r.proto}`);
  if (r.dport) parts.push(`port ${(typeof r.dport[0] === 'number' ? [r.dport as [number, number]] : (r.dport as [number, number][])).map(([a, b]) => (a === b ? a : `${a}-${b}`)).join(',')}`);
  if (r.syn) parts.push('syn');
  if (r.tier) parts.push(`tier ${tiers.get(r.tier) ?? r.tier}`);
  if (r.dir && r.dir !== 'ingress') parts.push(r.dir);
  return parts.join(' ') || 'any';
}

export function register(program: Command): void {
  const policy = program.command('policy').description('policy files: check, apply (with rollback), show; plug operator programs into slots');

  policy
    .command('check <file>')
    .description('validate a policy file and print what it compiles to, without touching the kernel')
    .option('--max-rules <n>', `rule slots of the target: 2 to ${MAX_MAX_RULES} (default 1024)`, parsed((v) => parseCount(v, 'max rules', 2, MAX_MAX_RULES)), 1024)
    .option('--json', 'print JSON')
    .addHelpText('after', `
Rules are evaluated in this order: the management allowlist, the denylist, the allowlist, then the
candidate rules of the longest source prefix that matches (rules with that prefix first, then those
of shorter prefixes, then rules without a source condition, each group in file order); the first
whose other conditions match decides; none: the default rule.

Examples:
  sluice policy check examples/policy.yaml
  sluice policy check policy.yaml --json | jq .rules`)
    .action((file: string, o: { maxRules: number; json?: boolean }) => {
      const pf = loadPolicy(file, {}, o.maxRules);
      const tiers = tierNames(pf);
      const compiled = compilePolicy({ rules: policyOfFile(pf) }, o.maxRules);
      const lists = compileLists(pf.lists);
      const geo = pf.geoip ? geoOf(pf.geoip) : undefined;
      const summary = {
        file: pf.file,
        default: limitsJson(pf.limits),
        rules: pf.rules.map((r) => ({
          name: r.name, id: r.id, slots: compiled.slotsOf.get(r.id), match: describeMatch(r, tiers), alg: r.alg ?? null,
          pps: r.pps === undefined || r.pps === null ? null : Number(r.pps), pps_period_ms: r.ppsPeriodMs ?? 1000, pps_burst: r.ppsBurst === undefined ? null : Number(r.ppsBurst),
          bps: r.bps === undefined ? null : Number(r.bps), bps_period_ms: r.bpsPeriodMs ?? 1000, bps_burst: r.bpsBurst === undefined ? null : Number(r.bpsBurst),
          window_ms: r.windowMs ?? null, key: r.key ?? null, key_by: r.keyBy ?? null, action: r.action ?? 'drop', block_ms: r.blockMs ?? null, plugin: r.plugin ?? null,
        })),
        map_entries: {
          rule_slots: compiled.rules.length,
          cidr_entries: compiled.cidrs.length,
          list_entries: lists.length,
          geo_entries: geo?.entries.length ?? 0,
        },
        candidates: compiled.cidrs.map((c) => ({ prefix: formatPrefix(c), slots: c.slots })).concat([{ prefix: '(no prefix)', slots: compiled.any }]),
        geoip: geo ? { tiers: Object.fromEntries(geo.tierIds), source: geo.source, input_ranges: geo.ranges, entries: geo.entries.length, estimated_kernel_bytes: geo.entries.length * LPM_BYTES_PER_ENTRY, attribution: GEOIP_ATTRIBUTION } : null,
        egress: pf.egress,
      };
      if (o.json) return printJson(summary);
      console.log(`${pf.file}: valid`);
      console.log(`default: ${describeLimits(pf.limits)}`);
      const per = (ms: number): string => formatRate({ units: 0, periodMs: ms }).slice(1);
      const limitOf = (r: (typeof summary.rules)[number]): string => [
        r.pps !== null ? `${num(r.pps)} pkt${per(r.pps_period_ms)}${r.pps_burst ? ` burst ${num(r.pps_burst)}` : ''}` : '',
        r.bps !== null ? `${human(r.bps)}${per(r.bps_period_ms)}${r.bps_burst ? ` burst ${human(r.bps_burst)}` : ''}` : '',
        r.window_ms !== null && (r.alg === 'fixed' || r.alg === 'sliding') ? `window ${r.window_ms} ms` : '',
      ].filter(Boolean).join(', ') || '-';
      const keyOf = (r: (typeof summary.rules)[number]): string => (r.key === null ? 'default' : r.key === 'rule' ? 'rule' : `${r.key_by ?? 'src'} /${r.key.v4 ?? '-'} /${r.key.v6 ?? '-'}`);
      const actionOf = (r: (typeof summary.rules)[number]): string => `${r.action === 'block' ? '' : r.action}${r.block_ms !== null ? `${r.action === 'block' ? '' : ' '}block ${r.block_ms / 1000}s` : ''}${r.plugin !== null ? ` plugin ${r.plugin}` : ''}`;
      console.log(table(summary.rules.map((r) => [r.name ?? '', r.id, (r.slots ?? []).join(','), r.match, r.alg ?? '', limitOf(r), keyOf(r), actionOf(r)]),
        ['rule', 'id', 'slots', 'match', 'alg', 'limit', 'key', 'action']));
      console.log(`\ncandidates by source prefix (longest first, then file order):`);
      for (const c of summary.candidates) console.log(`  ${c.prefix.padEnd(24)} -> slots ${c.slots.join(', ') || '(default rule)'}`);
      console.log(`\nmap entries: ${summary.map_entries.rule_slots} rule slots, ${summary.map_entries.cidr_entries} source prefixes, ${summary.map_entries.list_entries} list entries, ${summary.map_entries.geo_entries} GeoIP prefixes`);
      if (summary.geoip) {
        console.log(`GeoIP: ${Object.entries(summary.geoip.tiers).map(([k, v]) => `${k}=${v === 255 ? 'default' : v}`).join(', ')}; ${num(summary.geoip.input_ranges.v4)} IPv4 and ${num(summary.geoip.input_ranges.v6)} IPv6 ranges merged into ${num(summary.geoip.entries)} prefixes, about ${human(summary.geoip.estimated_kernel_bytes)} of kernel memory`);
        console.log(GEOIP_ATTRIBUTION);
      }
    });

  placeOptions(policy.command('apply <file>').description('apply a policy file to a protected interface, atomically'))
    .option('--confirm-within <duration>', 'roll back to the previous policy unless `sluice policy confirm` arrives in time: 1s to 1h (e.g. 60s, 5m)', parsed((v) => parseDurationMs(v, 'confirm-within', 1000, 3_600_000)))
    .option('--drop-runtime', 'discard the list edits made at runtime (`sluice deny add` …); by default they are kept over the file\'s lists')
    .option('--allow-mgmt-shrink', 'allow the file to take prefixes out of the management allowlist (refused otherwise: lockout protection)')
    .option('--json', 'print JSON')
    .addHelpText('after', `
A file whose mgmt list leaves out a prefix the live management allowlist holds is refused
(SLUICE_E_MGMT_SHRINK), unless --allow-mgmt-shrink; an empty file is refused (write {} for none).
List edits made at runtime (sluice allow|deny|mgmt add|del) are kept over the file's lists, and
named on stderr; --drop-runtime discards them (docs/cli.md, "The runtime layer").

Examples:
  sluice policy apply policy.yaml --iface eth1
  sluice policy apply policy.yaml --iface eth1 --confirm-within 60s   # then: sluice policy confirm --iface eth1`)
    .action(async (file: string, o: PlaceOptions & { confirmWithin?: number; json?: boolean; allowMgmtShrink?: boolean; dropRuntime?: boolean }) => {
      const pl = place(o);
      // With a deadline the daemon holds the rollback (a trial); without, it would set the file back as drift.
      if (!o.confirmWithin) refuseIfManaged(pl, '`sluice policy apply` without --confirm-within');
      const p0 = Protection.open(pl); // refuses an interface that is not protected
      p0.close();
      const progress = new Progress();
      // Rule ids are read and assigned under the lock, as every read-modify-write.
      let loadedRuntime: ReturnType<typeof emptyRuntime> | undefined;
      const { pf, r } = await Protection.locked(pl, async () => {
        const prior = loadSettings(pl);
        loadedRuntime = prior?.runtime;
        progress.start(`reading and checking ${file}`);
        const pf = loadPolicy(file, prior?.ruleIds ?? {}, prior?.maxRules);
        progress.end(policySize(pf));
        // Runtime list edits are laid over the file's lists, unless the operator drops them.
        const runtime = o.dropRuntime ? emptyRuntime() : prior?.runtime ?? emptyRuntime();
        const lists = layered(pf.lists, runtime);
        assertMgmtKept(mgmtDropped(prior?.lists.mgmt ?? [], lists.mgmt), o.iface, o.allowMgmtShrink);
        const change = { ...pl, ...policyContent(pf), lists, runtime, policyFile: pf.file };
        // With a deadline, the rollback is persisted (and its holder started) before the change is live.
        progress.start('writing rules and lists to the kernel (one flip)');
        const r: UpResult & { pending?: Pending } = o.confirmWithin ? await applyWithRollback({ ...change, applied: pf.file }, o.confirmWithin) : await Protection.up(change);
        progress.end();
        return { pf, r };
      });
      const rt = r.protection.settings.runtime;
      if (!runtimeIsEmpty(rt)) console.error(`note: runtime list edits kept over ${pf.file}: ${describeRuntime(rt)} (\`--drop-runtime\` discards them)`);
      else if (o.dropRuntime && !runtimeIsEmpty(loadedRuntime)) console.error(`note: runtime list edits dropped: ${describeRuntime(loadedRuntime)}`);
      const deadline = r.pending?.deadline ?? null;
      const holder = r.pending?.holder ?? null;
      for (const w of r.warnings) console.error(`warning: ${w}`);
      const version = r.protection.limiter.version();
      r.protection.close();
      if (o.json) return printJson({ iface: o.iface, netns: o.netns ?? null, file: pf.file, version, rules: pf.rules.length + 1, runtime: rt ?? emptyRuntime(), confirm_by: deadline ? new Date(deadline).toISOString() : null, rollback_holder: holder });
      console.log(`${o.iface}: ${pf.file} is live (policy version ${version}, ${pf.rules.length + 1} rules)`);
      if (deadline) console.log(`it rolls back at ${new Date(deadline).toISOString()} (${holder!.kind === 'daemon' ? 'by the daemon' : 'by the rollback agent'}, process ${holder!.pid}) unless you run: sluice policy confirm --iface ${o.iface}${o.netns ? ` --netns ${o.netns}` : ''}; until then other changes of ${o.iface} are refused`);
    });

  placeOptions(policy.command('confirm').description('keep a policy applied with --confirm-within'))
    .action(async (o: PlaceOptions) => {
      const had = await confirm(place(o));
      console.log(had ? `${o.iface}: confirmed; no rollback` : `${o.iface}: nothing to confirm`);
    });

  placeOptions(policy.command('rollback').description('roll back a policy applied with --confirm-within now (or retry a rollback that failed)'))
    .action(async (o: PlaceOptions) => {
      const done = await rollbackNow(place(o));
      console.log(done ? `${o.iface}: rolled back; the settings from before the change are live` : `${o.iface}: nothing to roll back`);
    });

  placeOptions(policy.command('_rollback', { hidden: true }))
    .requiredOption('--id <id>', 'the pending change to roll back')
    .action(async (o: PlaceOptions & { id: string }) => {
      process.exitCode = await runAgent(place(o), o.id);
    });

  placeOptions(policy.command('show').description('the live policy of an interface, with per-rule counters'))
    .option('--json', 'print JSON')
    .action((o: PlaceOptions & { json?: boolean }) => {
      const p = Protection.open(place(o));
      try {
        const s = p.settings;
        const names = p.ruleNames();
        const rules = [...names].map(([id, name]) => {
          const c = p.limiter.counters(id);
          const by = (r: string): number => Number(c.reason_packets[REASON_NAMES.indexOf(r)] ?? 0n);
          return { id, name: name ?? null, matched: Number(c.reason_packets.reduce((a, b) => a + b, 0n)), allowed: by('pass'), dropped: Number(c.packets[1]), would_drop: by('dryrun'), blocked: by('blocked'), aggregate: by('aggregate'), bytes: Number(c.bytes[0] + c.bytes[1]) };
        });
        const geoMap = mapOf(p.maps, 'sl_geo');
        const geo = s.geoip ? { tiers: s.geoip.tiers, default_tier: s.geoip.defaultTier, kernel_bytes: geoMap?.memoryUsage() ?? null, attribution: GEOIP_ATTRIBUTION } : null;
        const pending = summarizePending(p.place);
        const out = { iface: s.iface, netns: s.netns, version: p.limiter.version(), file: s.policyFile, default: limitsJson(s.limits), lists: s.lists, runtime: s.runtime ?? emptyRuntime(), egress: s.egress, plugins: s.plugins, geoip: geo, rules, rollback_at: pending?.rollback_at ?? null, rollback: pending };
        if (o.json) return printJson(out);
        console.log(`${s.iface}: policy version ${out.version}${s.policyFile ? ` from ${s.policyFile}` : ''}`);
        if (pending) {
          const line = describePending(pending, `--iface ${s.iface}${s.netns ? ` --netns ${s.netns}` : ''}`);
          if (pending.state === 'pending') console.log(line);
          else console.error(`warning: ${line}`);
        }
        console.log(table(rules.map((r) => [`${r.id} ${r.name ?? ''}`, num(r.matched), num(r.allowed), num(r.dropped), num(r.would_drop), num(r.blocked), num(r.aggregate)]), ['rule', 'matched', 'allowed', 'dropped', 'would drop', 'blocked', 'aggregate']));
        console.log(`lists: ${s.lists.mgmt.length} mgmt, ${s.lists.deny.length} deny, ${s.lists.allow.length} allow; egress ${s.egress ? 'on' : 'off'}`);
        if (!runtimeIsEmpty(s.runtime)) console.log(`runtime list edits over the file (kept across \`policy apply\`): ${describeRuntime(s.runtime)}`);
        if (geo) console.log(`GeoIP: tiers ${Object.keys(s.geoip!.tiers).join(', ')} (default ${s.geoip!.defaultTier}); kernel memory of the GeoIP map ${geo.kernel_bytes !== null ? human(geo.kernel_bytes) : 'unknown'}. ${GEOIP_ATTRIBUTION}`);
      } finally {
        p.close();
      }
    });

  const hookOption = (): Option => new Option('--hook <hook>', 'xdp (ingress) or tc (egress)').choices(['xdp', 'tc']).default('xdp');
  placeOptions(policy.command('plug').description('load an operator program into a plugin slot: rules with `plugin: N` hand it their packets'))
    .requiredOption('--slot <n>', 'slot 0..15', parsed((v) => parseCount(v, 'slot', 0, 15)))
    .requiredOption('--object <file>', 'the BPF object')
    .requiredOption('--section <name>', 'the program, by section (e.g. xdp) or function name')
    .addOption(hookOption())
    .addHelpText('after', `
Example:
  make -C bpf && sluice policy plug --iface eth1 --slot 3 --object bpf/plugins/drop_ssdp.bpf.o --section xdp`)
    .action(async (o: PlaceOptions & { slot: number; object: string; section: string; hook: 'xdp' | 'tc' }) => {
      const p = Protection.open(place(o));
      try {
        await p.plug(o.hook, o.slot, o.object, o.section);
        console.log(`${o.iface}: ${o.section} of ${o.object} plugged into ${o.hook} slot ${o.slot}`);
      } finally {
        p.close();
      }
    });
  placeOptions(policy.command('unplug').description('empty a plugin slot: its rules go back to the built-in limiter'))
    .requiredOption('--slot <n>', 'slot 0..15', parsed((v) => parseCount(v, 'slot', 0, 15)))
    .addOption(hookOption())
    .action(async (o: PlaceOptions & { slot: number; hook: 'xdp' | 'tc' }) => {
      const p = Protection.open(place(o));
      try {
        const had = await p.unplug(o.hook, o.slot);
        console.log(had ? `${o.iface}: ${o.hook} slot ${o.slot} emptied` : `${o.iface}: ${o.hook} slot ${o.slot} was empty`);
      } finally {
        p.close();
      }
    });
}
