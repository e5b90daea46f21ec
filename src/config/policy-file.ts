/**
 * The policy file (YAML): defaults, lists, GeoIP tiers and rules, validated by one schema into one
 * error that lists every problem (file, path, line, what is expected), then compiled into what the
 * control plane applies: the default rule's limits, rules with stable ids, lists, GeoIP tiers.
 * Nothing here touches the kernel; `sluice policy check` shows the result.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { DEFAULT_LIMITS, type Limits, type PolicyContent } from '../limiter/rule';
import { compileGeo, GeoError, type GeoConfig } from '../limiter/geoip';
import { compilePolicy, PolicyError, type RuleSpec } from '../limiter/policy';
import { FORMS, parseCount, parseDurationMs, parseRate } from '../limiter/units';
import { ConfigError, type ConfigProblem } from './errors';
import { pathText } from '../limiter/text';
import { deepFreeze, lineOf, notThisKind, sortByLine, zodProblems, type Seg } from './document';
import { defaultRuleOf, limitsProblems, mergeLimits, ruleScopeOf } from './limits';
import { cidr, kindOf, limitsSchema, listsSchema, oneOf, shown, unitValue, wholeIn } from './schema';

export const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 };

const oneOrMany = <T extends z.ZodType>(item: T) => z.union([item, z.array(item)], {
  error: (iss) => `expected one value or a list, got ${shown(iss.input)}`,
}).transform((v) => (Array.isArray(v) ? v : [v]) as z.output<T>[]);

/** 53, "1000-2000", or a list of them -> ranges. */
const ports = z.unknown().transform((v, ctx): [number, number][] => {
  const one = (x: unknown): [number, number] | undefined => {
    if (typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= 65535) return [x, x];
    const m = typeof x === 'string' ? /^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$/.exec(x) : null;
    if (m && Number(m[1]) >= 1 && Number(m[2]) <= 65535 && Number(m[1]) <= Number(m[2])) return [Number(m[1]), Number(m[2])];
    ctx.issues.push({ code: 'custom', message: `expected a port (1..65535) or a range such as "1000-2000", got ${shown(x)}`, input: x });
    return undefined;
  };
  const list = Array.isArray(v) ? v : [v];
  if (list.length === 0) ctx.issues.push({ code: 'custom', message: 'an empty list of ports matches nothing: leave dst_port out to match any', input: v });
  return list.map(one).filter((r): r is [number, number] => !!r);
});

const proto = z.unknown().transform((v, ctx): number => {
  if (typeof v === 'string' && PROTOCOLS[v.toLowerCase()] !== undefined) return PROTOCOLS[v.toLowerCase()]!;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 255) return v;
  ctx.issues.push({ code: 'custom', message: `expected a protocol (${Object.keys(PROTOCOLS).join(', ')}) or its number (1..255), got ${shown(v)}`, input: v });
  return z.NEVER;
});

const matchSchema = z.strictObject({
  src: oneOrMany(cidr).optional(),
  dst: oneOrMany(cidr).optional(),
  proto: proto.optional(),
  dst_port: ports.optional(),
  tcp_flags: oneOf(['syn']).optional(),
  tier: z.string({ error: (iss) => `expected the name of a GeoIP tier, got ${shown(iss.input)}` }).optional(),
  dir: oneOf(['ingress', 'egress', 'both']).optional(),
}, { error: (iss) => `expected a mapping of conditions (src, dst, proto, dst_port, tcp_flags, tier, dir), got ${shown(iss.input)}` });

const per = z.union([
  oneOf(['source', 'rule', 'destination']),
  z.strictObject({ v4: wholeIn('IPv4 key prefix length', 1, 32).optional(), v6: wholeIn('IPv6 key prefix length', 1, 128).optional() }),
], { error: (iss) => `expected source, destination, rule, or prefix lengths such as { v4: 24, v6: 48 }; got ${shown(iss.input)}` });

const aggregate = z.union([
  z.literal('none'),
  z.strictObject({
    rate: unitValue((v) => parseRate(v, 'aggregate rate'), 'packets per second (e.g. 50k; an aggregate is always per second)'),
    burst: unitValue((v) => parseCount(v, 'aggregate burst', 0), `a number of packets (${FORMS.count})`).optional(),
  }),
], { error: (iss) => `expected none or { rate, burst }, got ${shown(iss.input)}` });

const ruleLimitSchema = limitsSchema.omit({ key: true }).extend({ per: per.optional(), aggregate: aggregate.optional() });

const ruleSchema = z.strictObject({
  name: z.string({ error: (iss) => (iss.input === undefined ? 'required: a name for the rule (its counters and state follow the name across changes)' : `expected a name, got ${shown(iss.input)}`) })
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, { error: (iss) => `${shown(iss.input)} is not a rule name (letters, digits, "_", "-", "."; at most 63)` }),
  match: matchSchema.optional(),
  limit: ruleLimitSchema.optional(),
  // Not a z.union: its one message would hide what is wrong with the duration of a block.
  on_exceed: z.unknown().transform((v, ctx): 'drop' | { block: number } => {
    if (v === 'drop') return 'drop';
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && 'block' in v) {
      const d = (v as { block: unknown }).block;
      try {
        if (typeof d !== 'string' && typeof d !== 'number') throw new Error(`block: expected a duration (${FORMS.duration}), got ${shown(d)}`);
        return { block: parseDurationMs(d, 'block', 1) };
      } catch (e) {
        ctx.issues.push({ code: 'custom', message: (e as Error).message, input: v });
        return z.NEVER;
      }
    }
    ctx.issues.push({ code: 'custom', message: `expected drop or { block: DURATION }, got ${shown(v)}`, input: v });
    return z.NEVER;
  }).optional(),
  mode: oneOf(['enforce', 'dry-run']).optional(),
  plugin: wholeIn('plugin slot', 0, 15).optional(),
}, { error: (iss) => `expected a rule: a mapping with name, match, limit, on_exceed, mode, plugin; got ${shown(iss.input)}` });

const geoSchema = z.strictObject({
  tiers: z.record(z.string(), z.array(z.string({ error: (iss) => `expected a country code such as DE, got ${shown(iss.input)}` }))),
  default_tier: z.string({ error: 'required: the name of the tier of every source not listed (e.g. foreign)' }),
  csv: z.string().optional(),
}, { error: (iss) => `expected { tiers: { NAME: [CC, …] }, default_tier: NAME, csv?: PATH }, got ${shown(iss.input)}` });

export const policySchema = z.strictObject({
  defaults: limitsSchema.extend({ aggregate: aggregate.optional() }).optional(),
  mgmt: listsSchema.shape.mgmt,
  allow: listsSchema.shape.allow,
  deny: listsSchema.shape.deny,
  malformed: oneOf(['pass', 'drop']).optional(),
  egress: z.boolean().optional(),
  geoip: geoSchema.optional(),
  rules: z.array(ruleSchema, { error: (iss) => `expected a list of rules, got ${shown(iss.input)}` }).optional(),
  // The whole document is never shown: a policy path that names another file by mistake (a
  // password file, a key) must not put its content into the log or an API answer.
}, { error: (iss) => `expected a mapping (defaults, mgmt, allow, deny, malformed, egress, geoip, rules), got ${kindOf(iss.input)}: is this a policy file?` });

/** A compiled policy file (pass its ruleIds back in to keep ids across changes). */
export interface PolicyFile extends PolicyContent {
  file: string;
}

/**
 * Validate and compile a policy file's text. `previousIds` keeps rule ids stable across changes
 * (a rule keeps its counters and state while its name stays). maxRules: the rule slots loaded.
 */
export function parsePolicy(text: string, file: string, previousIds: Record<string, number> = {}, maxRules = 1024): PolicyFile {
  file = resolve(file);
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true });
  const problems: ConfigProblem[] = [];
  const at = (path: Seg[], message: string): void => { problems.push({ path: pathText(path), line: lineOf(doc, lc, path), message }); };
  for (const e of doc.errors) problems.push({ path: '', ...(e.linePos ? { line: e.linePos[0].line } : {}), message: `YAML: ${e.message.split('\n')[0]!}` });
  if (problems.length) throw new ConfigError(file, problems);
  const raw = (doc.toJS({ maxAliasCount: 100 }) as unknown) ?? null;
  // An empty file (or one of comments) is refused, never read as "no rules, no lists": applied, it
  // would empty the management allowlist. `{}` says "nothing" on purpose.
  if (raw === null) throw new ConfigError(file, [{ path: '', message: 'the policy file is empty (a file caught half-written, or the wrong path?); write `{}` for a policy of defaults only, on purpose' }]);
  notThisKind(raw, Object.keys(policySchema.shape), file, 'policy file');
  // Duplicate rule names are found on the raw document, so that they are reported with every
  // other problem rather than only once the rest is fixed.
  const dupNames: ConfigProblem[] = [];
  const rawRules = (raw as { rules?: unknown }).rules;
  if (Array.isArray(rawRules)) {
    const seen = new Map<string, number>();
    rawRules.forEach((r, i) => {
      const name = (r as { name?: unknown } | null)?.name;
      if (typeof name !== 'string') return;
      if (seen.has(name)) dupNames.push({ path: pathText(['rules', i, 'name']), line: lineOf(doc, lc, ['rules', i, 'name']), message: `the name ${name} is used by rules[${seen.get(name)}] too` });
      else seen.set(name, i);
    });
  }
  const parsed = policySchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(file, sortByLine([...zodProblems(parsed.error, doc, lc, [], policySchema), ...dupNames]));
  problems.push(...dupNames);
  const p = parsed.data;

  const limits = mergeLimits(DEFAULT_LIMITS, p.defaults);
  for (const [k, message] of limitsProblems(limits)) at(['defaults', ...(k ? [k] : [])], message);

  // Tiers, and ids by name (kept from before, new names take the lowest free ids).
  const tiers = new Map<string, number>();
  if (p.geoip) {
    Object.keys(p.geoip.tiers).forEach((name, i) => tiers.set(name, i + 1));
    tiers.set(p.geoip.default_tier, 255);
  }
  const names = new Map<string, number>();
  (p.rules ?? []).forEach((r, i) => {
    if (!names.has(r.name)) names.set(r.name, i); // duplicates: reported above
  });
  const ruleIds: Record<string, number> = {};
  const used = new Set<number>([0]);
  for (const name of names.keys()) {
    const prev = previousIds[name];
    if (prev !== undefined && prev > 0 && prev < maxRules && !used.has(prev)) { ruleIds[name] = prev; used.add(prev); }
  }
  let free = 1;
  for (const name of names.keys()) {
    if (ruleIds[name] !== undefined) continue;
    while (used.has(free)) free++;
    ruleIds[name] = free;
    used.add(free);
  }

  const rules: RuleSpec[] = (p.rules ?? []).map((r, i) => {
    // A burst belongs to its rate: a rule that sets its own rate does not inherit the defaults' burst.
    const base: Limits = {
      ...limits,
      ...(r.limit?.rate !== undefined ? { burst: 0 } : {}),
      ...(r.limit?.bytes_rate !== undefined ? { bytesBurst: 0 } : {}),
    };
    const l = mergeLimits(base, r.limit);
    const m = r.match ?? {};
    if (m.tier !== undefined && !tiers.has(m.tier)) {
      at(['rules', i, 'match', 'tier'], p.geoip ? `no tier named ${m.tier} (the tiers: ${[...tiers.keys()].join(', ')})` : `tier ${m.tier} needs a geoip section that defines tiers`);
    }
    if (m.tcp_flags && m.proto !== undefined && m.proto !== 6) at(['rules', i, 'match', 'tcp_flags'], 'tcp_flags needs proto tcp');
    const perKey = r.limit?.per;
    const dir = m.dir ?? 'ingress';
    const spec: RuleSpec = {
      id: ruleIds[r.name]!,
      name: r.name,
      ...(m.src ? { src: m.src } : {}),
      ...(m.dst ? { dst: m.dst } : {}),
      ...(m.proto !== undefined ? { proto: m.proto } : m.tcp_flags ? { proto: 6 } : {}),
      ...(m.dst_port ? { dport: m.dst_port } : {}),
      ...(m.tcp_flags === 'syn' ? { syn: true } : {}),
      ...(m.tier !== undefined && tiers.has(m.tier) ? { tier: tiers.get(m.tier)! } : {}),
      dir,
      alg: l.algorithm,
      pps: l.rate,
      ...(l.ratePeriodMs !== undefined ? { ppsPeriodMs: l.ratePeriodMs } : {}),
      ppsBurst: l.burst,
      ...(l.bytesRate !== null ? { bps: l.bytesRate, bpsBurst: l.bytesBurst, ...(l.bytesPeriodMs !== undefined ? { bpsPeriodMs: l.bytesPeriodMs } : {}) } : {}),
      windowMs: l.windowMs,
      ...ruleScopeOf(l),
      key: perKey === 'rule' ? 'rule' : typeof perKey === 'object' ? { v4: perKey.v4 ?? l.keyV4, v6: perKey.v6 ?? l.keyV6 } : { v4: l.keyV4, v6: l.keyV6 },
      // Egress rules are keyed by the remote end unless they say otherwise.
      keyBy: perKey === 'destination' || (perKey === undefined && dir === 'egress') ? 'dst' : 'src',
      ...(r.mode === 'dry-run' ? { action: 'dry-run' as const } : typeof r.on_exceed === 'object' ? { action: 'block' as const, blockMs: r.on_exceed.block } : {}),
      ...(r.plugin !== undefined ? { plugin: r.plugin } : {}),
    };
    const agg = r.limit?.aggregate ?? p.defaults?.aggregate;
    if (agg === 'none') spec.aggregate = null;
    else if (agg) spec.aggregate = { pps: agg.rate, ...(agg.burst !== undefined ? { burst: agg.burst } : {}) };
    if (r.mode === 'dry-run' && typeof r.on_exceed === 'object') at(['rules', i, 'on_exceed'], 'a dry-run rule never blocks: drop on_exceed or the mode');
    return spec;
  });

  // What only the compiler sees (candidate lists, slot counts), mapped back to the rules.
  if (!problems.length) {
    try {
      compilePolicy({ rules: [defaultRuleOf(limits), ...rules] }, maxRules);
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e;
      for (const msg of e.problems) {
        const m = /^rules\[(\d+)\]/.exec(msg);
        if (m && Number(m[1]) > 0) at(['rules', Number(m[1]) - 1], msg.replace(/^rules\[\d+\]( \([^)]*\))?: /, ''));
        else at(m ? ['defaults'] : ['rules'], msg.replace(/^rules\[0\] \(default\): /, ''));
      }
    }
  }
  if (problems.length) throw new ConfigError(file, sortByLine(problems));
  // GeoIP tiers, country codes and the CSV are checked here, before anything reaches the kernel;
  // the compilation is kept, so that what is applied is what was checked.
  let geoip: GeoConfig | null = null;
  const csvInputs: Record<string, string> = {};
  if (p.geoip && !problems.length) {
    geoip = { tiers: p.geoip.tiers, defaultTier: p.geoip.default_tier };
    let csvText: string | undefined;
    if (p.geoip.csv) {
      // Relative to this policy file, wherever the config that names it is.
      geoip.csv = resolve(file, '..', p.geoip.csv);
      try {
        csvText = readFileSync(geoip.csv, 'utf8');
        geoip.csvSha256 = createHash('sha256').update(csvText).digest('hex');
        csvInputs[geoip.csv] = geoip.csvSha256;
      } catch (e) {
        csvInputs[geoip.csv] = '';
        at(['geoip', 'csv'], `cannot read the GeoIP CSV ${geoip.csv} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    }
    if (!problems.length) {
      try {
        compileGeo(geoip, csvText);
      } catch (e) {
        if (!(e instanceof GeoError)) throw e;
        for (const q of e.problems) {
          const m = /^tiers\.([^[]+)(?:\[(\d+)\])?$/.exec(q.path);
          at(q.path === 'csv' ? ['geoip', 'csv'] : m ? ['geoip', 'tiers', m[1]!, ...(m[2] !== undefined ? [Number(m[2])] : [])] : ['geoip', 'tiers'], q.message);
        }
      }
    }
  }
  if (problems.length) throw Object.assign(new ConfigError(file, sortByLine(problems)), { inputs: csvInputs });
  const uniq = (xs: string[] | undefined): string[] => [...new Set(xs ?? [])];
  return deepFreeze({
    file,
    limits,
    rules,
    lists: { mgmt: uniq(p.mgmt), deny: uniq(p.deny), allow: uniq(p.allow) },
    malformedDrop: p.malformed === 'drop',
    egress: p.egress ?? rules.some((r) => r.dir !== 'ingress'),
    geoip,
    ruleIds,
  });
}

export function loadPolicy(file: string, previousIds?: Record<string, number>, maxRules?: number): PolicyFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(resolve(file), [{ path: '', message: `cannot read the policy file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` }]);
  }
  return parsePolicy(text, file, previousIds, maxRules);
}
