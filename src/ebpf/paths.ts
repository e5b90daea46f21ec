/**
 * Where Sluice's files are: the repository (or installed package) root, the BPF objects, the CLI,
 * the native addon, and the roots of the pins, the settings and the machine-wide interface locks.
 * Every place that used to climb `__dirname, '..', '..', '..'` asks here instead.
 *
 * It lives in src/ebpf because that is the lowest layer every other one may import (cli, agent,
 * lab, fleet, limiter; ebpf itself needs the addon's path in ./native.ts); config and api need no
 * path of their own (config reads only the files it is given, api is handed its backend).
 *
 * Overrides, the environment variables the project has always honoured (names and defaults kept):
 *   SLUICE_PIN_ROOT    the pins               default /sys/fs/bpf/sluice
 *   SLUICE_STATE_DIR   the settings           default /run/sluice
 *   SLUICE_LOCK_DIR    the interface locks    default /run/lock/sluice
 *   SLUICE_NATIVE      the addon              default build/Release/sluice_native.node
 *   SLUICE_TEST_OBJECT the test build         default bpf/sluice_test.bpf.o
 *   SLUICE_STACK_OBJECT the stack tests' one  default bpf/sluice.bpf.o
 * The roots are functions that read the environment when called: src/agent/state.ts reads them
 * once when it loads (as it always has), so a test that sets them first (test/lib/private-root.ts)
 * still moves them even though this module is loaded earlier, by the binding.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** The root of the repository or the installed package (this file is dist/src/ebpf/paths.js there). */
export const REPO = resolve(__dirname, '..', '..', '..');
/** The command line (bin/sluice.js), for what starts it as a process. */
export const SLUICE_BIN = join(REPO, 'bin', 'sluice.js');
export const PACKAGE_JSON = join(REPO, 'package.json');

/** The BPF objects (make -C bpf). */
export const BPF_DIR = join(REPO, 'bpf');
/** The data path the agent loads unless told otherwise (--object). */
export const PROD_OBJECT = join(BPF_DIR, 'sluice.bpf.o');
/** The test build of the same source (clock from a map); SLUICE_TEST_OBJECT: another build of it. */
export const TEST_OBJECT = process.env['SLUICE_TEST_OBJECT'] ?? join(BPF_DIR, 'sluice_test.bpf.o');
/** The benchmarks' baselines (bpf/bench). */
export const BENCH_OBJECT = join(BPF_DIR, 'bench.bpf.o');
/** The object of the stack tests: $SLUICE_STACK_OBJECT, default the production build. */
export const STACK_OBJECT = process.env['SLUICE_STACK_OBJECT'] || PROD_OBJECT;
/** The lab's programs (bpf/lab). */
export const FLOOD_OBJECT = join(BPF_DIR, 'lab', 'flood.bpf.o');
export const COUNT_OBJECT = join(BPF_DIR, 'lab', 'count.bpf.o');

/** Where pins live; SLUICE_PIN_ROOT moves them (a directory on a bpffs; tests use a private one). */
export function pinRoot(): string {
  return resolve(process.env['SLUICE_PIN_ROOT'] || '/sys/fs/bpf/sluice');
}

/** Where settings and locks live; SLUICE_STATE_DIR moves them. */
export function stateRoot(): string {
  return resolve(process.env['SLUICE_STATE_DIR'] || '/run/sluice');
}

/** Where a daemon marks the interfaces it manages, machine-wide; SLUICE_LOCK_DIR moves it. */
export function lockRoot(): string {
  return resolve(process.env['SLUICE_LOCK_DIR'] || '/run/lock/sluice');
}

const ADDON = join('build', 'Release', 'sluice_native.node');

/**
 * Where the addon is: $SLUICE_NATIVE if set, else build/Release under the first ancestor of this
 * file that has it (src/ebpf/ and dist/src/ebpf/ alike).
 */
export function addonPath(): string {
  const env = process.env['SLUICE_NATIVE'];
  if (env) return resolve(env);
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const candidate = join(dir, ADDON);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) break;
  }
  return join(__dirname, '..', '..', ADDON);
}
