/**
 * npm run fuzz -- [--frames N] [--seed S] [--frame I] [--round N] [--probe-every N] [--production]
 *
 * The fuzzer of test/fuzz/lib.ts from the command line: N frames (default 1,000,000) of seed S
 * (default: from the clock, printed), or only frame I of seed S, run alone and checked exactly.
 * --production: through bpf/sluice.bpf.o on the kernel's clock (no checks that need a fixed one).
 * Needs root (BPF_PROG_TEST_RUN). Exits 1 with the failing case on a broken invariant.
 */
import { PROD_OBJECT, TestDatapath } from '../lib/datapath';
import { Fuzzer, FuzzFailure } from './lib';

function args(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    if (a === '--production') {
      out.set('production', '1');
      continue;
    }
    const [k, v] = a.includes('=') ? a.slice(2).split('=', 2) as [string, string] : [a.slice(2), argv[++i]];
    if (v === undefined) throw new Error(`--${k} needs a value`);
    out.set(k, v);
  }
  return out;
}

function int(a: Map<string, string>, k: string, dflt?: number): number | undefined {
  const v = a.get(k);
  if (v === undefined) return dflt;
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${k} wants a whole number, got ${v}`);
  return n;
}

async function main(): Promise<number> {
  const a = args(process.argv.slice(2));
  for (const k of a.keys()) if (!['frames', 'seed', 'frame', 'round', 'probe-every', 'production'].includes(k)) throw new Error(`unknown option --${k}`);
  const seed = int(a, 'seed', Date.now() % 1_000_000_007)!;
  const frames = int(a, 'frames', 1_000_000)!;
  const only = int(a, 'frame');
  const production = a.has('production');
  const dp = await TestDatapath.load({ maxEntries: 1 << 18, maxRules: 16, ...(production ? { object: PROD_OBJECT } : {}) });
  try {
    console.log(only === undefined ? `fuzz: ${frames} frames, seed ${seed}` : `fuzz: frame ${only} of seed ${seed}, alone`);
    const r = await new Fuzzer(dp, {
      frames, seed, ...(only !== undefined ? { only } : {}), kernelClock: production,
      command: production ? 'npm run fuzz -- --production' : 'npm run fuzz --',
      ...(a.has('round') ? { roundFrames: int(a, 'round')! } : {}),
      ...(a.has('probe-every') ? { probeEvery: int(a, 'probe-every')! } : {}),
      log: (l) => console.log(l),
    }).run();
    console.log(`ok: ${r.frames} frames run (${r.refused} refused, ${r.probes} probed alone, ${r.padded} padded copies run too, ${r.readable} with a readable source), ${r.passed} passed, ${r.keys} keys; ${r.seconds.toFixed(1)} s, ${r.framesPerSecond} frames/s`);
    console.log(`reasons: ${Object.entries(r.reasons).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    return 0;
  } catch (e) {
    if (e instanceof FuzzFailure) {
      console.error(e.message);
      return 1;
    }
    throw e;
  } finally {
    dp.close();
  }
}

main().then((code) => { process.exitCode = code; }, (e) => { console.error(e instanceof Error ? e.message : e); process.exitCode = 2; });
