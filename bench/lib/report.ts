/**
 * docs/benchmarks.md's generated parts, from bench/results/*.json: each table sits between
 * `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, and the rest of the page (the method and the
 * discussion) is written by hand. Also the chart, docs/benchmarks-throughput.svg.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../../src/ebpf/paths';
import type { DecisionRow } from '../decision';
import type { AccuracyRow } from './accuracy';
import { RESULTS, type Machine } from './results';

/** The machine a result file ran on, as a clause: CPU (family/model), CPUs, kernel, clock source, HZ. */
export function machineText(m: Machine): string {
  const id = m.cpu_family !== undefined ? ` (family ${m.cpu_family}, model ${m.cpu_model})` : '';
  return `${m.cpu}${id}, ${m.cpus} CPUs, kernel ${m.kernel}${m.clocksource ? `, clock source ${m.clocksource}` : ''}${m.hz ? `, HZ ${m.hz}` : ''}`;
}
import type { Figure } from './throughput';

const DOC = join(REPO, 'docs', 'benchmarks.md');
const CHART = join(REPO, 'docs', 'benchmarks-throughput.svg');

const load = <T>(name: string): T | undefined => {
  const p = join(RESULTS, name);
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as T) : undefined;
};
const mpps = (x: number): string => (Number.isFinite(x) ? (x / 1e6).toFixed(x < 1e6 ? 3 : 2) : '–');
const pct = (x: number, d = 0): string => (Number.isFinite(x) ? `${(x * 100).toFixed(d)}%` : '–');
const num = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '–');
const row = (cells: (string | number)[]): string => `| ${cells.join(' | ')} |`;
const head = (cells: string[]): string => `${row(cells)}\n${row(cells.map(() => '---'))}`;

interface Throughput {
  date: string;
  quick: boolean;
  machine: Machine;
  versions: Record<string, string>;
  limit: { pps: number; burst: number; tableSize: number; spoof_aggregate_pps: number };
  window_s: number;
  rounds: number;
  generator_ns_per_frame: Record<string, number[]>;
  results: Figure[];
}

const SHAPE_TITLES: Record<string, string> = { one: 'one source', k1000: '1,000 sources', spoof: 'spoofed' };

function throughputTable(t: Throughput): string {
  const names = [...new Set(t.results.map((f) => f.name))];
  const lines = [
    head(['configuration', 'shape', 'offered (Mpps)', 'decided (Mpps)', 'spread', 'ratio to ceiling', 'e2e (Mpps)', 'CPU 0: busy / softirq / user', 'passed']),
  ];
  for (const n of names) {
    for (const f of t.results.filter((x) => x.name === n)) {
      lines.push(row([
        `${f.name}`, SHAPE_TITLES[f.shape] ?? f.shape, mpps(f.offered_pps), `**${mpps(f.decided_pps)}**`,
        `${mpps(f.spread.decided_pps[0])}–${mpps(f.spread.decided_pps[1])}`, f.ratio_to_ceiling.toFixed(3),
        mpps(f.e2e_pps), `${pct(f.cpu0_busy)} / ${pct(f.cpu0_softirq)} / ${pct(f.cpu0_user)}`, pct(f.passed_share, 2),
      ]));
    }
  }
  const gen = Object.entries(t.generator_ns_per_frame).map(([s, v]) => `${SHAPE_TITLES[s] ?? s} ${v.join(', ')}`).join('; ');
  return `${lines.join('\n')}\n\n${t.quick ? 'A `--quick` run' : 'A full run'} of ${t.date.slice(0, 16).replace('T', ' ')} UTC: ${t.rounds} rounds, ` +
    `${t.window_s} s windows; ${machineText(t.machine)}; ${Object.entries(t.versions).map(([k, v]) => `${k}: ${v}`).join(', ')}. ` +
    `Every limiter: ${t.limit.pps} packets/s per source (burst ${t.limit.burst}), ${num(t.limit.tableSize)} sources tracked; Sluice's rule ` +
    `has an aggregate of ${num(t.limit.spoof_aggregate_pps)} packets/s in the spoofed flood. Generator's own cost (ns/frame, per round): ${gen}.`;
}

/** Ratios that the issue sets as targets, from one run's figures. */
function targetsTable(t: Throughput | undefined, d: { results: DecisionRow[] } | undefined, scale: { throughput: { sources: { n: number; ratio_to_1000: number }[] } } | undefined): string {
  const lines = [head(['target', 'measured', 'met'])];
  const get = (name: string, shape: string): Figure | undefined => t?.results.find((f) => f.name === name && f.shape === shape);
  const sluice = (shape: string): Figure[] => (t?.results ?? []).filter((f) => f.name.startsWith('sluice-') && f.shape === shape);
  const worst = (shape: string): Figure | undefined => sluice(shape).sort((a, b) => a.ratio_to_ceiling - b.ratio_to_ceiling)[0];
  const ok = (b: boolean | undefined): string => (b === undefined ? '–' : b ? 'yes' : '**no**');
  const add = (target: string, measured: string, met: boolean | undefined): void => {
    lines.push(row([target, measured, ok(met)]));
  };
  if (t) {
    const one = worst('one');
    add('one source over its limit: >= 70% of the ceiling', one ? `${pct(one.ratio_to_ceiling)} (${one.name}, the slowest algorithm; e2e ${pct(one.e2e_pps / (get('ceiling', 'one')?.e2e_pps ?? NaN))})` : '–', one && one.ratio_to_ceiling >= 0.7);
    for (const peer of ['nftables', 'iptables']) {
      const p = get(peer, 'one');
      add(`one source: >= 4x ${peer}`, one && p ? `${(one.decided_pps / p.decided_pps).toFixed(1)}x` : '–', one && p ? one.decided_pps >= 4 * p.decided_pps : undefined);
    }
    const node = get('node', 'one');
    add('one source: >= 12x the Node.js limiter', one && node ? `${(one.decided_pps / node.decided_pps).toFixed(0)}x` : '–', one && node ? one.decided_pps >= 12 * node.decided_pps : undefined);
    const k = worst('k1000');
    add('1,000 sources: >= 65% of the ceiling', k ? `${pct(k.ratio_to_ceiling)} (${k.name})` : '–', k && k.ratio_to_ceiling >= 0.65);
    const s = worst('spoof');
    add('spoofed flood: >= 40% of the ceiling, aggregate holding', s ? `${pct(s.ratio_to_ceiling)} (${s.name}); passed ${pct(s.passed_share, 2)} of the flood` : '–', s && s.ratio_to_ceiling >= 0.4);
  }
  if (d) {
    const hits = d.results.filter((r) => /hit-(pass|drop)$/.test(r.name));
    const max = hits.sort((a, b) => b.ratio_to_floor - a.ratio_to_floor)[0];
    const maxSame = [...hits].sort((a, b) => b.ratio_to_floor_same_clock - a.ratio_to_floor_same_clock)[0];
    add('per-packet cost (existing key): ratio_to_floor <= 1.3', max ? `${max.ratio_to_floor} at most (${max.name}); against a floor with the same (coarse) clock ${maxSame!.ratio_to_floor_same_clock}` : '–', max && max.ratio_to_floor <= 1.3);
  }
  if (scale) {
    const m = scale.throughput.sources.find((x) => x.n === 1_000_000);
    add('1,000,000 tracked sources: >= 80% of the 1,000-source throughput', m ? pct(m.ratio_to_1000) : '–', m && m.ratio_to_1000 >= 0.8);
  }
  return lines.join('\n');
}

function decisionTable(d: { results: DecisionRow[]; repeat: number; rounds: number; stat?: string; date: string; machine?: Machine }): string {
  const lines = [head(['case', 'clock', 'ns/packet', 'ratio_to_floor', 'ratio to the same-clock floor', 'spread (ns)'])];
  for (const r of d.results) lines.push(row([r.name, r.clock, r.ns_per_packet, r.ratio_to_floor, r.ratio_to_floor_same_clock, `${r.spread_ns[0]}–${r.spread_ns[1]}`]));
  return `${lines.join('\n')}\n\nBPF_PROG_TEST_RUN, repeat ${num(d.repeat)}, the ${d.stat ?? 'median'} of ${d.rounds} interleaved rounds, ${d.date.slice(0, 16).replace('T', ' ')} UTC; ` +
    `the test run itself (a program that returns at once) costs ${d.results[0]?.baseline_pass_ns ?? '?'} ns` +
    `${d.machine ? `; ${machineText(d.machine)}` : ' (the machine was not recorded)'}.`;
}

/** bench/results/decision-compare.json (bench:decision --baseline-objects DIR). */
interface DecisionCompare {
  date: string;
  repeat: number;
  rounds: number;
  stat?: string;
  machine?: Machine;
  objects: { now: { from: string; commit?: string }; baseline: { from: string; commit?: string } };
  reference: { pass_ns: number; floor_ns: number; floor_coarse_ns: number };
  results: { name: string; clock: string; now_ns: number; baseline_ns: number; change_pct: number; now_spread_ns: number[]; baseline_spread_ns: number[] }[];
}

/**
 * This build next to another commit's objects, in one run, each case against the frozen floor that
 * reads its clock (issue 13: an existing key, pass and drop, every algorithm, at least 25% fewer
 * ns/packet than the base and at most 1.4 times that floor).
 */
function compareTable(c: DecisionCompare): string {
  const floorOf = (clock: string): number => (clock === 'coarse' ? c.reference.floor_coarse_ns : c.reference.floor_ns);
  const base = c.objects.baseline.commit ? `sluice-base (${c.objects.baseline.commit.slice(0, 7)})` : 'baseline objects';
  const lines = [head(['case', 'clock', `${base}, ns/packet`, 'this build, ns/packet', 'change', 'x the same-clock floor (base)', 'x the same-clock floor (this build)', 'spread, this build (ns)', 'spread, base (ns)'])];
  for (const r of c.results) {
    const f = floorOf(r.clock);
    lines.push(row([r.name, r.clock, r.baseline_ns, `**${r.now_ns}**`, `${r.change_pct > 0 ? '+' : ''}${r.change_pct.toFixed(1)}%`, (r.baseline_ns / f).toFixed(2), (r.now_ns / f).toFixed(2), `${r.now_spread_ns[0]}–${r.now_spread_ns[1]}`, `${r.baseline_spread_ns[0]}–${r.baseline_spread_ns[1]}`]));
  }
  const hits = c.results.filter((r) => r.name.includes('/hit-'));
  const fewer = hits.filter((r) => r.change_pct <= -25).length;
  const near = hits.filter((r) => r.now_ns <= 1.4 * floorOf(r.clock)).length;
  const worst = Math.max(...hits.map((r) => r.now_ns / floorOf(r.clock)));
  return `${lines.join('\n')}\n\nAn existing key (hit-pass, hit-drop), every algorithm and both clocks: ${fewer} of ${hits.length} cases at least 25% fewer ns/packet than ${base}, ` +
    `${near} of ${hits.length} at most 1.4 times the frozen floor that reads the same clock (at most ${worst.toFixed(2)} times). The same run: the test run itself ${c.reference.pass_ns} ns, ` +
    `the floor ${c.reference.floor_ns} ns (fine clock), ${c.reference.floor_coarse_ns} ns (coarse). BPF_PROG_TEST_RUN, repeat ${num(c.repeat)}, the ${c.stat ?? 'median'} of ${c.rounds} interleaved rounds, ` +
    `${c.date.slice(0, 16).replace('T', ' ')} UTC${c.machine ? `; ${machineText(c.machine)}` : ''}.`;
}

/** bench/results/cpus.json (bench/lib/cpus.ts). */
interface Cpus {
  date: string;
  machine?: Machine;
  rounds: number;
  window_s: number;
  results: { config: string; title: string; shape: string; one_cpu_pps: number; two_cpu_pps: number; scaling: number; scaling_vs_ceiling: number; rounds: { scaling_vs_ceiling: number }[] }[];
}

function cpusTable(c: Cpus): string {
  const shapes: Record<string, string> = { 'k1000-own': '1,000 sources per CPU, each CPU its own', 'k1000-shared': 'the same 1,000 sources on both CPUs' };
  const t = [head(['configuration', 'traffic', 'one CPU (Mpps per CPU-second)', 'two CPUs (Mpps per CPU-second)', 'two / one', 'x the ceiling\'s two / one', 'per round'])];
  for (const r of c.results) {
    t.push(row([r.title, shapes[r.shape] ?? r.shape, mpps(r.one_cpu_pps), mpps(r.two_cpu_pps), r.scaling.toFixed(2), r.config === 'ceiling' ? '1' : `**${r.scaling_vs_ceiling.toFixed(2)}**`, r.rounds.map((x) => x.scaling_vs_ceiling.toFixed(2)).join(', ')]));
  }
  return `${t.join('\n')}\n\nMedian of ${c.rounds} interleaved rounds, ${c.window_s} s windows, ${c.date.slice(0, 16).replace('T', ' ')} UTC${c.machine ? `; ${machineText(c.machine)}` : ''}.`;
}

interface Scale {
  per_packet: { sources: { n: number; ns_per_packet: number; ratio_to_first: number; spread_ns: number[]; entries?: number }[]; cidr: { n: number; ns_per_packet: number; ratio_to_first: number; spread_ns: number[]; apply_ms?: number }[] };
  /** Before issue 13, rate_limit_map alone (no map, key_bytes, value_bytes). */
  state_memory: { map?: string; key_bytes?: number; value_bytes?: number; max_entries: number; bytes: number; mb_per_100k: number }[];
  throughput: { sources: { n: number; decided_pps: number; ratio_to_1000: number; minimal_pps?: number; ratio_to_minimal?: number }[]; cidr: { n: number; decided_pps: number; ratio_to_first: number }[] };
}

function scaleTables(s: Scale): string {
  const a = [head(['tracked sources', 'ns/packet (test run)', 'x 1 source', 'entries', 'throughput (Mpps)', 'x 1,000 sources', 'minimal limiter, map for every source (Mpps)', 'Sluice / minimal'])];
  const tp = new Map(s.throughput.sources.map((x) => [x.n, x]));
  const ns = [...new Set([...s.per_packet.sources.map((x) => x.n), ...s.throughput.sources.map((x) => x.n)])].sort((x, y) => x - y);
  for (const n of ns) {
    const p = s.per_packet.sources.find((x) => x.n === n);
    const t = tp.get(n);
    a.push(row([num(n), p ? p.ns_per_packet : '–', p ? p.ratio_to_first : '–', p?.entries !== undefined ? num(p.entries) : '–', t ? mpps(t.decided_pps) : '–', t ? t.ratio_to_1000.toFixed(2) : '–',
      t?.minimal_pps !== undefined ? mpps(t.minimal_pps) : '–', t?.ratio_to_minimal !== undefined ? t.ratio_to_minimal.toFixed(2) : '–']));
  }
  const b = [head(['source-CIDR entries', 'ns/packet (test run)', 'x 1 entry', 'policy applied in (ms)', 'throughput, 1,000 sources (Mpps)', 'x 1 entry'])];
  const cn = [...new Set([...s.per_packet.cidr.map((x) => x.n), ...s.throughput.cidr.map((x) => x.n)])].sort((x, y) => x - y);
  for (const n of cn) {
    const p = s.per_packet.cidr.find((x) => x.n === n);
    const t = s.throughput.cidr.find((x) => x.n === n);
    b.push(row([num(n), p ? p.ns_per_packet : '–', p ? p.ratio_to_first : '–', p?.apply_ms ?? '–', t ? mpps(t.decided_pps) : '–', t ? t.ratio_to_first.toFixed(2) : '–']));
  }
  return `${a.join('\n')}\n\n${b.join('\n')}\n\n${memoryTable(s.state_memory)}`;
}

/** The state maps' memory by the kernel's accounting (before issue 13: rate_limit_map alone, 24/48 bytes). */
function memoryTable(rows: Scale['state_memory']): string {
  const c = [head(['state map', 'key, value (bytes)', 'max_entries', 'kernel memory (memlock)', 'per 100,000 entries'])];
  for (const m of rows) c.push(row([m.map ?? 'rate_limit_map', m.key_bytes !== undefined ? `${m.key_bytes}, ${m.value_bytes}` : '24, 48', num(m.max_entries), `${(m.bytes / 1e6).toFixed(1)} MB`, `${m.mb_per_100k} MB`]));
  return c.join('\n');
}

function clockTables(c: { throughput: Figure[]; accuracy: AccuracyRow[] }, d?: { results: DecisionRow[] }): string {
  const a = [head(['algorithm', 'ns/packet, coarse', 'ns/packet, fine', 'throughput coarse (Mpps)', 'throughput fine (Mpps)', 'passed / expected, coarse', 'passed / expected, fine'])];
  for (const alg of ['fixed', 'sliding', 'token', 'gcra']) {
    const ns = (fine: boolean): string => String(d?.results.find((r) => r.name === `${alg}/hit-drop${fine ? ' (fine clock)' : ''}`)?.ns_per_packet ?? '–');
    const tp = (cl: string): string => mpps(c.throughput.find((f) => f.name === `sluice-${alg}-${cl}`)?.decided_pps ?? NaN);
    const acc = (cl: string): string => {
      const r = c.accuracy.find((x) => x.alg === alg && x.clock === cl);
      return r ? `${num(r.passed)} / ${num(r.expected)} (${(r.error * 100).toFixed(2)}%)` : '–';
    };
    a.push(row([alg, ns(false), ns(true), tp('coarse'), tp('fine'), acc('coarse'), acc('fine')]));
  }
  const floor = d?.results.find((r) => r.name === 'floor');
  const floorC = d?.results.find((r) => r.name === 'floor-coarse');
  return `${a.join('\n')}\n\nThe floor: ${floor?.ns_per_packet ?? '?'} ns with the fine clock, ${floorC?.ns_per_packet ?? '?'} ns with the coarse one. ` +
    'ns/packet: an existing key over its limit (test run); throughput: one source over its limit (receiver capacity, as in the table above); ' +
    'passed / expected: one source at 10,000 packets/s offered millions, over 2 s.';
}

function spoofTable(s: { variants: { name: string; title: string }[]; results: Figure[] }): string {
  const lines = [head(['Sluice (token, 100 packets/s per source)', 'decided (Mpps)', 'ratio to ceiling', 'passed', 'CPU 0 softirq'])];
  const ceil = s.results.find((f) => f.name === 'ceiling');
  if (ceil) lines.push(row(['ceiling (drop everything)', mpps(ceil.decided_pps), '1.000', '0%', pct(ceil.cpu0_softirq)]));
  for (const v of s.variants) {
    const f = s.results.find((x) => x.name === `sluice-token-${v.name}`);
    if (f) lines.push(row([v.title, mpps(f.decided_pps), f.ratio_to_ceiling.toFixed(3), pct(f.passed_share, 2), pct(f.cpu0_softirq)]));
  }
  return lines.join('\n');
}

interface Control {
  top: { entries: number; cli_ms_median: number; read_ms_median: number; cli_ms: number[] };
  set: { cli_to_enforced_ms: number[]; cli_ms: number[]; library_to_enforced_ms: number[] };
  swap: { rules: number; median_ms: number; compile_and_apply_ms: number[] };
  daemon: { rss_idle_mb: number; rss_under_flood_mb: number; hwm_mb: number };
}

function controlTable(c: Control): string {
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  return [
    head(['figure', 'measured']),
    row([`\`sluice top -n 20\` over ${num(c.top.entries)} entries`, `${num(c.top.cli_ms_median)} ms for the command (${c.top.cli_ms.join(', ')}); the state map read and ranked in ${num(c.top.read_ms_median)} ms`]),
    row(['`sluice set --rate` to the first packet dropped under the new limit', `${med(c.set.cli_to_enforced_ms)} ms median (${c.set.cli_to_enforced_ms.join(', ')}); the command alone ${med(c.set.cli_ms)} ms`]),
    row(['Limiter.applyPolicy to the first packet dropped under it (in process)', `${med(c.set.library_to_enforced_ms)} ms median (${c.set.library_to_enforced_ms.join(', ')})`]),
    row([`swap a policy of ${num(c.swap.rules)} rules (compile, write the idle half, flip)`, `${c.swap.median_ms} ms median (${c.swap.compile_and_apply_ms.join(', ')})`]),
    row(['the daemon (`sluice run`, one interface): resident memory', `${c.daemon.rss_idle_mb} MB idle, ${c.daemon.rss_under_flood_mb} MB after a flood of 1,000 sources (peak ${c.daemon.hwm_mb} MB)`]),
  ].join('\n');
}

function accuracyTable(a: { results: AccuracyRow[] }): string {
  const lines = [head(['algorithm', 'sources x rate', 'offered (Mpps)', 'window (s)', 'passed', 'expected', 'error'])];
  for (const r of a.results) lines.push(row([r.alg, `${num(r.sources)} x ${num(r.rate)}/s`, mpps(r.offered_pps), r.window_s.toFixed(3), num(r.passed), num(r.expected), `${(r.error * 100).toFixed(3)}%`]));
  return lines.join('\n');
}

/** A horizontal bar chart of receiver capacity (log scale), one group per configuration. */
export function chart(t: Throughput): string {
  const names = [...new Set(t.results.map((f) => f.name))];
  const shapes = ['one', 'k1000', 'spoof'];
  const colors: Record<string, string> = { one: '#1f77b4', k1000: '#2ca02c', spoof: '#d62728' };
  const barH = 9;
  const gap = 8;
  const left = 150;
  const width = 760;
  const plotW = width - left - 70;
  const groupH = shapes.length * barH + gap;
  const top = 40;
  const height = top + names.length * groupH + 40;
  const lo = 0.01e6;
  const hi = 100e6;
  const x = (v: number): number => left + (Math.log10(Math.max(v, lo) / lo) / Math.log10(hi / lo)) * plotW;
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left}" y="16" font-size="13" font-weight="bold">Packets decided per second of the server's CPU (log scale)</text>`,
  ];
  for (const v of [0.01e6, 0.1e6, 1e6, 10e6, 100e6]) {
    out.push(`<line x1="${x(v)}" y1="${top - 6}" x2="${x(v)}" y2="${height - 30}" stroke="#ddd"/>`);
    out.push(`<text x="${x(v)}" y="${height - 16}" text-anchor="middle" fill="#555">${v >= 1e6 ? `${v / 1e6} M` : `${v / 1e3} k`}</text>`);
  }
  shapes.forEach((s, i) => {
    out.push(`<rect x="${left + 230 + i * 120}" y="24" width="10" height="10" fill="${colors[s]}"/>`);
    out.push(`<text x="${left + 244 + i * 120}" y="33">${esc(SHAPE_TITLES[s]!)}</text>`);
  });
  names.forEach((n, g) => {
    const y0 = top + g * groupH;
    out.push(`<text x="${left - 6}" y="${y0 + (shapes.length * barH) / 2 + 4}" text-anchor="end">${esc(n)}</text>`);
    shapes.forEach((s, i) => {
      const f = t.results.find((r) => r.name === n && r.shape === s);
      if (!f) return;
      const y = y0 + i * barH;
      out.push(`<rect x="${left}" y="${y}" width="${Math.max(1, x(f.decided_pps) - left).toFixed(1)}" height="${barH - 1}" fill="${colors[s]}"/>`);
      out.push(`<text x="${(x(f.decided_pps) + 3).toFixed(1)}" y="${y + barH - 1}" font-size="9" fill="#333">${mpps(f.decided_pps)}</text>`);
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function replaceBlock(doc: string, name: string, body: string): string {
  const open = `<!-- bench:${name} -->`;
  const close = `<!-- /bench:${name} -->`;
  const i = doc.indexOf(open);
  const j = doc.indexOf(close);
  if (i < 0 || j < i) return doc;
  return `${doc.slice(0, i + open.length)}\n${body}\n${doc.slice(j)}`;
}

/** Rewrite the generated blocks of docs/benchmarks.md (and the chart) from what bench/results holds. */
export function writeReport(): string {
  if (!existsSync(DOC)) throw new Error(`${DOC} is missing: it holds the hand-written parts of the report`);
  let doc = readFileSync(DOC, 'utf8');
  const t = load<Throughput>('throughput.json');
  const d = load<{ results: DecisionRow[]; repeat: number; rounds: number; date: string }>('decision.json');
  const dc = load<DecisionCompare>('decision-compare.json');
  const mem = load<{ date: string; machine?: Machine; state_memory: Scale['state_memory'] }>('memory.json');
  const s = load<Scale>('scale.json');
  const cp = load<Cpus>('cpus.json');
  const c = load<{ throughput: Figure[]; accuracy: AccuracyRow[] }>('clock.json');
  const sp = load<{ variants: { name: string; title: string }[]; results: Figure[] }>('spoof.json');
  const ctl = load<Control>('control.json');
  const acc = load<{ results: AccuracyRow[] }>('accuracy.json');
  doc = replaceBlock(doc, 'targets', targetsTable(t, d, s));
  if (t) {
    doc = replaceBlock(doc, 'throughput', throughputTable(t));
    writeFileSync(CHART, chart(t));
  }
  if (d) doc = replaceBlock(doc, 'decision', decisionTable(d));
  if (dc) doc = replaceBlock(doc, 'decision-compare', compareTable(dc));
  if (mem) doc = replaceBlock(doc, 'memory', `${memoryTable(mem.state_memory)}\n\n${mem.date.slice(0, 16).replace('T', ' ')} UTC${mem.machine ? `; ${machineText(mem.machine)}` : ''}.`);
  if (s) doc = replaceBlock(doc, 'scale', scaleTables(s));
  if (cp) doc = replaceBlock(doc, 'cpus', cpusTable(cp));
  if (c) doc = replaceBlock(doc, 'clock', clockTables(c, d));
  if (sp) doc = replaceBlock(doc, 'spoof', spoofTable(sp));
  if (ctl) doc = replaceBlock(doc, 'control', controlTable(ctl));
  if (acc) doc = replaceBlock(doc, 'accuracy', accuracyTable(acc));
  writeFileSync(DOC, doc);
  return DOC;
}
