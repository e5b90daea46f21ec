// The import edges of DESIGN.md ("The parts and their rooms"), checked by `npm run deps`.
// A layer is a directory of src/; a layer may import itself, src/generated (the generated mirror of
// bpf/sluice.h) and the layers listed here, nothing else. Type-only imports count as edges too.
// `npm run deps:graph` draws the layer graph as mermaid source.
'use strict';

/** @type {Record<string, string[]>} layer -> the layers it may import */
const EDGES = {
  cli: ['agent', 'lab', 'api', 'config', 'limiter', 'ebpf', 'fleet'],
  agent: ['limiter', 'config', 'ebpf', 'fleet'],
  api: ['limiter'],
  fleet: ['limiter', 'ebpf'],
  lab: ['ebpf', 'packet'],
  config: ['limiter'],
  limiter: ['ebpf'],
  ebpf: [],
  packet: [],
  generated: [],
};
const ALWAYS = ['generated'];

const layerRules = Object.entries(EDGES).flatMap(([layer, allowed]) => {
  const ok = [layer, ...allowed, ...ALWAYS];
  const rule = (name, from) => ({
    name,
    comment: `src/${layer} may import only ${ok.map((l) => `src/${l}`).join(', ')} (DESIGN.md, the allowed import edges)`,
    severity: 'error',
    from,
    to: { path: '^src/', pathNot: `^src/(${ok.join('|')})/` },
  });
  return [rule(`layer-${layer}`, { path: `^src/${layer}/` })];
});

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'src-outside-layers',
      comment: 'every module of src/ lives in one of the layers of DESIGN.md',
      severity: 'error',
      from: { path: '^src/', pathNot: `^src/(${Object.keys(EDGES).join('|')})/` },
      to: {},
    },
    {
      name: 'src-not-to-tools',
      comment: 'src/ never imports bench/, test/ or scripts/',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(bench|test|scripts)/' },
    },
    {
      name: 'bench-not-to-test',
      comment: 'bench/ and test/ may import src/, never each other (shared harness code belongs in src/)',
      severity: 'error',
      from: { path: '^bench/' },
      to: { path: '^test/' },
    },
    {
      name: 'test-not-to-bench',
      comment: 'bench/ and test/ may import src/, never each other',
      severity: 'error',
      from: { path: '^test/' },
      to: { path: '^bench/' },
    },
    {
      name: 'no-cycles',
      comment: 'no module reaches itself through its imports',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'every import resolves (a typo in a path would hide an edge)',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|build|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
