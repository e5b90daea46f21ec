/**
 * deploy/Containerfile read the way a builder reads it, for tests that cannot build images here
 * (docker and podman cannot pull base images on this machine):
 *
 *  - parseContainerfile: stages, instructions (line continuations, comments, ARG/ENV substitution,
 *    COPY flags, exec and shell forms);
 *  - checkImage: what the file says against this repository: every COPY source exists (and is not
 *    left out of the build context by .dockerignore), what the run-time stage copies from the build
 *    stage is what that stage makes (mapped onto this checkout, which is built the same way), the
 *    run-time stage holds what `sluice` runs from and nothing of the tests or sources, and the entry
 *    command is in exec form and exists;
 *  - stageImage: the run-time stage's files laid out under a directory (its COPYs carried out
 *    against this checkout), so that its ENTRYPOINT and CMD can be run outside a container with
 *    every absolute path of the image under that directory.
 */
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';

export interface Instruction {
  /** Upper case: FROM, COPY, RUN … */
  cmd: string;
  /** The text after the keyword, continuations joined, variables not substituted. */
  rest: string;
  /** 1-based line of the keyword. */
  line: number;
}

export interface Copy {
  line: number;
  /** Name (or index) of the stage copied from; undefined: the build context. */
  from?: string;
  sources: string[];
  dest: string;
  /** dest resolved against WORKDIR, absolute. */
  destAbs: string;
}

export interface Stage {
  index: number;
  name?: string;
  from: string;
  workdir: string;
  env: Record<string, string>;
  copies: Copy[];
  runs: string[];
  entrypoint?: string[];
  cmd?: string[];
  /** Instructions whose form is refused (shell-form ENTRYPOINT/CMD …), with why. */
  instructions: Instruction[];
}

export interface Containerfile {
  globalArgs: Record<string, string>;
  stages: Stage[];
  problems: string[];
}

/** Physical lines to instructions: `\` at the end of a line continues it; comment lines go. */
export function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  let cur: { parts: string[]; line: number } | null = null;
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (/^\s*#/.test(line)) return; // comments (and parser directives), also inside a continuation
    if (cur === null && line.trim() === '') return;
    const cont = /\\\s*$/.test(line);
    const body = cont ? line.replace(/\\\s*$/, '') : line;
    if (cur === null) cur = { parts: [], line: i + 1 };
    cur.parts.push(body);
    if (!cont) {
      const joined = cur.parts.join(' ').trim();
      const m = /^(\w+)\s*(.*)$/s.exec(joined);
      if (m) out.push({ cmd: m[1]!.toUpperCase(), rest: m[2]!.trim(), line: cur.line });
      cur = null;
    }
  });
  if (cur !== null) {
    const c = cur as { parts: string[]; line: number };
    const m = /^(\w+)\s*(.*)$/s.exec(c.parts.join(' ').trim());
    if (m) out.push({ cmd: m[1]!.toUpperCase(), rest: m[2]!.trim(), line: c.line });
  }
  return out;
}

/** $VAR, ${VAR}, ${VAR:-default} as the builder substitutes them in FROM, COPY, ENV, WORKDIR. */
function substitute(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)/g, (_, a: string | undefined, def: string | undefined, b: string | undefined) => {
    const name = (a ?? b)!;
    const v = vars[name];
    return v !== undefined && v !== '' ? v : def ?? '';
  });
}

/** Whitespace-separated words, honouring "…" and '…' (ENV, shell-form COPY). */
function words(s: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2] ?? m[3]!);
  return out;
}

function execForm(rest: string): string[] | undefined {
  if (!rest.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(rest) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}

const COPY_FLAGS = new Set(['from', 'chown', 'chmod', 'link']);

export function parseContainerfile(text: string): Containerfile {
  const problems: string[] = [];
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  let st: Stage | undefined;
  let stageVars: Record<string, string> = {};
  for (const ins of instructions(text)) {
    const at = `line ${ins.line} (${ins.cmd})`;
    if (ins.cmd === 'ARG') {
      const [name, ...v] = ins.rest.split('=');
      const value = v.length ? v.join('=') : undefined;
      if (!st) { globalArgs[name!] = value ?? ''; continue; }
      stageVars[name!] = value ?? globalArgs[name!] ?? '';
      continue;
    }
    if (ins.cmd === 'FROM') {
      const w = words(substitute(ins.rest, globalArgs));
      const as = w.findIndex((x) => x.toUpperCase() === 'AS');
      st = { index: stages.length, from: w[0] ?? '', workdir: '/', env: {}, copies: [], runs: [], instructions: [], ...(as > 0 ? { name: w[as + 1] } : {}) };
      stages.push(st);
      stageVars = {};
      continue;
    }
    if (!st) { problems.push(`${at}: before the first FROM`); continue; }
    st.instructions.push(ins);
    const vars = { ...stageVars, ...st.env };
    switch (ins.cmd) {
      case 'WORKDIR':
        st.workdir = posix.resolve(st.workdir, substitute(ins.rest, vars));
        break;
      case 'ENV': {
        const w = words(ins.rest);
        if (w.length >= 2 && !w[0]!.includes('=')) st.env[w[0]!] = substitute(ins.rest.slice(ins.rest.indexOf(w[0]!) + w[0]!.length).trim(), vars);
        else for (const kv of w) {
          const eq = kv.indexOf('=');
          if (eq <= 0) { problems.push(`${at}: ${JSON.stringify(kv)} is not KEY=VALUE`); continue; }
          st.env[kv.slice(0, eq)] = substitute(kv.slice(eq + 1), vars);
        }
        break;
      }
      case 'RUN':
        st.runs.push(ins.rest);
        break;
      case 'ADD':
        problems.push(`${at}: use COPY (ADD fetches URLs and unpacks archives; the check does not model it)`);
        break;
      case 'COPY': {
        let rest = ins.rest;
        const flags: Record<string, string> = {};
        for (let m = /^--(\w+)(?:=(\S*))?\s+/.exec(rest); m; m = /^--(\w+)(?:=(\S*))?\s+/.exec(rest)) {
          if (!COPY_FLAGS.has(m[1]!)) problems.push(`${at}: unknown flag --${m[1]}`);
          flags[m[1]!] = m[2] ?? '';
          rest = rest.slice(m[0].length);
        }
        const list = (execForm(rest) ?? words(rest)).map((x) => substitute(x, vars));
        if (list.length < 2) { problems.push(`${at}: COPY needs a source and a destination`); break; }
        const dest = list[list.length - 1]!;
        const sources = list.slice(0, -1);
        if (sources.some((s) => /[*?[]/.test(s))) problems.push(`${at}: wildcards in COPY sources are not checked: name each path`);
        if (sources.length > 1 && !dest.endsWith('/')) problems.push(`${at}: several sources need a destination directory ending in /`);
        st.copies.push({ line: ins.line, sources, dest, destAbs: posix.resolve(st.workdir, dest) + (dest.endsWith('/') ? '/' : ''), ...(flags['from'] !== undefined ? { from: flags['from'] } : {}) });
        break;
      }
      case 'ENTRYPOINT':
      case 'CMD': {
        const v = execForm(ins.rest);
        if (!v) { problems.push(`${at}: use the exec form (a JSON array): in shell form /bin/sh is process 1 and SIGTERM never reaches sluice`); break; }
        if (ins.cmd === 'ENTRYPOINT') st.entrypoint = v;
        else st.cmd = v;
        break;
      }
      case 'USER': case 'EXPOSE': case 'LABEL': case 'STOPSIGNAL': case 'HEALTHCHECK': case 'SHELL': case 'VOLUME': case 'ONBUILD':
        break;
      default:
        problems.push(`${at}: unknown instruction`);
    }
  }
  return { globalArgs, stages, problems };
}

// ---------------------------------------------------------------------------------------------
// .dockerignore

/** Patterns of .dockerignore as regular expressions over context-relative paths ('!' re-includes). */
function ignoreRules(text: string): { re: RegExp; negate: boolean }[] {
  return text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).map((l) => {
    const negate = l.startsWith('!');
    const p = (negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
    let re = '';
    for (let i = 0; i < p.length; i++) {
      if (p.startsWith('**/', i)) { re += '(?:.*/)?'; i += 2; } else if (p.startsWith('**', i)) { re += '.*'; i += 1; } else if (p[i] === '*') re += '[^/]*';
      else if (p[i] === '?') re += '[^/]';
      else re += p[i]!.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    // A pattern that names a directory leaves out everything below it too.
    return { re: new RegExp(`^${re}(?:/.*)?$`), negate };
  });
}

export function ignoredBy(rulesText: string, path: string): boolean {
  let out = false;
  for (const r of ignoreRules(rulesText)) if (r.re.test(path)) out = !r.negate;
  return out;
}

// ---------------------------------------------------------------------------------------------
// The check

/** What the build stage makes, from the RUN that makes it: a run-time COPY of it needs that RUN. */
const BUILD_OUTPUTS: { what: string; match: (rel: string) => boolean; made: (runs: string, rel: string) => boolean }[] = [
  { what: 'the dependencies (npm ci)', match: (r) => r === 'node_modules' || r.startsWith('node_modules/'), made: (runs) => /\bnpm ci\b/.test(runs) },
  { what: 'the native addon (npm ci runs node-gyp)', match: (r) => r.startsWith('build/'), made: (runs) => /\bnpm ci\b|\bnode-gyp\b/.test(runs) },
  { what: 'the compiled control plane (tsc)', match: (r) => r === 'dist' || r.startsWith('dist/'), made: (runs) => /\btsc\b/.test(runs) },
  { what: 'a BPF object (make -C bpf)', match: (r) => /^bpf\/[^/]+\.o$/.test(r), made: (runs, rel) => makesObject(runs, posix.basename(rel)) },
];

/** Whether a RUN makes bpf/<name>: `make -C bpf` with no target (all) or with that target. */
function makesObject(runs: string, name: string): boolean {
  for (const c of runs.split(/&&|;|\n/)) {
    const w = c.trim().split(/\s+/);
    if (w[0] !== 'make') continue;
    const at = w.indexOf('-C');
    if (at < 0 || w[at + 1] !== 'bpf') continue;
    const targets = w.slice(1).filter((x, i) => i !== at - 1 && i !== at && !x.startsWith('-') && !x.includes('='));
    if (targets.length === 0 || targets.includes(name)) return true;
  }
  return false;
}

/** Paths in the run-time image that are not for running: tests, sources, benches, the test build. */
const NOT_RUNTIME = [/^dist\/test(\/|$)/, /^dist\/bench(\/|$)/, /^dist\/scripts(\/|$)/, /^src(\/|$)/, /^test(\/|$)/, /^native(\/|$)/, /^bench(\/|$)/, /\.ts$/, /^bpf\/.*_test\.bpf\.o$/, /^bpf\/bench\.bpf\.o$/];

export interface RuntimeCopy {
  line: number;
  /** Absolute source in this checkout. */
  src: string;
  /** Path relative to the repository (the build stage's WORKDIR or the context). */
  rel: string;
  /** Absolute destination in the image (a file, or the directory a directory's content goes to). */
  dest: string;
  dir: boolean;
}

export interface ImageCheck {
  file: Containerfile;
  runtime: Stage;
  copies: RuntimeCopy[];
  /** ENTRYPOINT then CMD, as the image runs them. */
  entrypoint: string[];
  cmd: string[];
  /** Where the package lives in the image: the entry command is <home>/bin/sluice.js. */
  home: string;
  problems: string[];
}

/**
 * Everything that deploy/Containerfile (text) says, checked against the checkout at repo (built:
 * dist/, bpf/*.o, build/Release). problems is empty when the file is consistent with it.
 */
export function checkImage(text: string, repo: string, dockerignore: string): ImageCheck {
  const file = parseContainerfile(text);
  const problems = [...file.problems];
  const stages = file.stages;
  const runtime = stages[stages.length - 1];
  if (!runtime || stages.length < 2) {
    problems.push(`expected a build stage and a run-time stage, found ${stages.length} stage(s)`);
    return { file, runtime: runtime!, copies: [], entrypoint: [], cmd: [], home: '', problems };
  }
  // Node 20 on Debian 12: the slim image to run, the full one (compilers, headers) to build; one major.
  const node = (s: Stage): RegExpExecArray | null => /^(?:docker\.io\/)?(?:library\/)?node:(\d+)-(bookworm(?:-slim)?)$/.exec(s.from);
  const rt = node(runtime);
  if (!rt || rt[2] !== 'bookworm-slim' || rt[1] !== '20') problems.push(`the run-time stage must be FROM node:20-bookworm-slim (Node 20, Debian 12, slim), is FROM ${runtime.from}`);
  const build = stages.slice(0, -1);
  for (const b of build) {
    const m = node(b);
    if (!m || m[1] !== rt?.[1]) problems.push(`stage ${b.name ?? b.index} must be FROM node:${rt?.[1] ?? '20'}-bookworm (the addon is built for the Node it runs on), is FROM ${b.from}`);
  }

  const contextCopied = new Map<Stage, string[]>(); // context-relative paths each build stage copied in
  for (const s of stages) {
    for (const c of s.copies) {
      if (c.from !== undefined) continue;
      for (const src of c.sources) {
        const rel = posix.normalize(src).replace(/^\.\/?|\/$/g, '');
        if (rel.startsWith('..') || posix.isAbsolute(src)) { problems.push(`line ${c.line}: ${src} is outside the build context`); continue; }
        if (!existsSync(join(repo, rel))) problems.push(`line ${c.line}: COPY ${src}: no such file or directory in the build context (the repository)`);
        else if (ignoredBy(dockerignore, rel)) problems.push(`line ${c.line}: COPY ${src}: left out of the build context by .dockerignore`);
        if (!contextCopied.has(s)) contextCopied.set(s, []);
        contextCopied.get(s)!.push(rel);
      }
    }
  }

  const copies: RuntimeCopy[] = [];
  for (const c of runtime.copies) {
    for (const src of c.sources) {
      let rel: string;
      if (c.from === undefined) {
        rel = posix.normalize(src).replace(/^\.\/?|\/$/g, '');
      } else {
        const from = stages.find((s) => s.name === c.from || String(s.index) === c.from);
        if (!from || from === runtime) { problems.push(`line ${c.line}: --from=${c.from} names no earlier stage`); continue; }
        const abs = posix.resolve(from.workdir, src);
        if (!abs.startsWith(`${from.workdir}/`)) { problems.push(`line ${c.line}: ${src} is not under the build stage's WORKDIR ${from.workdir} (which this checkout stands for)`); continue; }
        rel = posix.relative(from.workdir, abs);
        // Copied in from the context (and not left out of it by .dockerignore), or made by a RUN.
        const copiedIn = !ignoredBy(dockerignore, rel) && (contextCopied.get(from) ?? []).some((p) => rel === p || rel.startsWith(`${p}/`) || p === '');
        const out = BUILD_OUTPUTS.find((o) => o.match(rel));
        if (!copiedIn && !out) problems.push(`line ${c.line}: ${src} is neither copied into stage ${c.from} nor something it builds`);
        else if (!copiedIn && out && !out.made(from.runs.join('\n'), rel)) problems.push(`line ${c.line}: ${src} is ${out.what}, but no RUN of stage ${c.from} makes it`);
      }
      const abs = join(repo, rel);
      if (!existsSync(abs)) { problems.push(`line ${c.line}: COPY ${src}: ${rel} does not exist (in this checkout, built as the build stage builds it)`); continue; }
      const dir = statSync(abs).isDirectory();
      const dest = c.destAbs.endsWith('/') && !dir ? posix.join(c.destAbs, posix.basename(rel)) : c.destAbs.replace(/\/$/, '');
      copies.push({ line: c.line, src: abs, rel, dest, dir });
    }
  }

  const entrypoint = runtime.entrypoint ?? [];
  const cmd = runtime.cmd ?? [];
  let home = '';
  const entry = entrypoint[0];
  if (!entry) problems.push('the run-time stage has no ENTRYPOINT');
  else if (!/^\/.+\/bin\/sluice\.js$/.test(entry)) problems.push(`ENTRYPOINT must start with the package's bin/sluice.js by its absolute path, starts with ${entry}`);
  else home = posix.dirname(posix.dirname(entry));
  if (!cmd.length) problems.push('the run-time stage has no CMD (the default command: run --config …)');

  // What the installed command runs from, relative to the package (bin/sluice.js requires
  // ../dist/src/cli/main.js; main.js reads ../../../package.json; the object and the addon are
  // found from dist/src as DEFAULT_OBJECT and addonPath() find them).
  if (home) {
    const inImage = (p: string): RuntimeCopy | undefined => copies.find((c) => (c.dir ? p === c.dest || p.startsWith(`${c.dest}/`) : p === c.dest));
    const need = ['bin/sluice.js', 'package.json', 'dist/src/cli/main.js', 'bpf/sluice.bpf.o', 'build/Release/sluice_native.node'];
    const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    for (const d of Object.keys(pkg.dependencies ?? {})) need.push(`node_modules/${d}/package.json`);
    for (const f of listFiles(join(repo, 'dist', 'src'))) need.push(posix.join('dist/src', f));
    for (const n of need) {
      const p = posix.join(home, n);
      const c = inImage(p);
      if (!c) { problems.push(`the run-time stage does not copy ${p} (${n}, which sluice runs from)`); continue; }
      const from = c.dir ? join(c.src, posix.relative(c.dest, p)) : c.src;
      if (!existsSync(from)) problems.push(`${p} would come from ${from} (line ${c.line}), which does not exist`);
      else if (c.rel !== n && !(c.dir && posix.join(c.rel, posix.relative(c.dest, p)) === n)) problems.push(`${p} would be ${posix.relative(repo, from)} of the build, not ${n} (line ${c.line})`);
    }
    if (!copies.some((c) => !c.dir && c.dest === entry)) problems.push(`ENTRYPOINT ${entry} is not a file the run-time stage copies`);
    else if (!(statSync(copies.find((c) => c.dest === entry)!.src).mode & 0o111)) problems.push(`ENTRYPOINT ${entry} is not executable in the build context`);
  }
  for (const c of copies) {
    const files = c.dir ? (c.rel === 'node_modules' ? [] : listFiles(c.src).map((f) => posix.join(c.rel, f))) : [c.rel];
    const bad = files.filter((f) => NOT_RUNTIME.some((re) => re.test(f)));
    if (bad.length) problems.push(`line ${c.line}: copies what is not for running (${bad.slice(0, 3).join(', ')}${bad.length > 3 ? ', …' : ''})`);
  }
  return { file, runtime, copies, entrypoint, cmd, home, problems };
}

function listFiles(dir: string, base = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, base), { withFileTypes: true })) {
    const rel = base ? `${base}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, rel));
    else out.push(rel);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Staging

/**
 * Lay out the run-time stage under root: each COPY carried out against this checkout, in order.
 * node_modules is linked, not copied (155 MB here; the image has the production dependencies
 * only, resolved the same way: the package's own files never depend on where it is). Everything
 * else is copied, so that the package finds its object, addon and package.json where the image
 * puts them (Node resolves a linked dist/ to the checkout's, which would hide a missing COPY).
 */
export function stageImage(check: ImageCheck, root: string): void {
  for (const c of check.copies) {
    const to = join(root, c.dest);
    mkdirSync(dirname(to), { recursive: true });
    if (c.dir && c.rel === 'node_modules') symlinkSync(c.src, to);
    else if (c.dir) cpSync(c.src, to, { recursive: true });
    else {
      cpSync(c.src, to);
      chmodSync(to, statSync(c.src).mode & 0o7777);
    }
  }
}

/**
 * The image's command with every absolute path of the image under root: ENTRYPOINT, then args
 * (what the DaemonSet's `args` or `docker run IMAGE …` give) or CMD; and the image's ENV.
 */
export function imageCommand(check: ImageCheck, root: string, args?: string[]): { argv: string[]; env: Record<string, string> } {
  const map = (a: string): string => (a.startsWith('/') ? join(root, a) : a);
  return { argv: [...check.entrypoint, ...(args ?? check.cmd)].map(map), env: { ...check.runtime.env } };
}
