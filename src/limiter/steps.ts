/**
 * Long control-plane work (compiling 100,000 list prefixes, writing them into a trie) as a
 * generator that yields between chunks, so that the same code runs either at once (runSync: tests,
 * benchmarks, one-shot commands) or in time slices that give the event loop a turn between them
 * (runAsync: the daemon, which serves its API meanwhile). A yield is only a place where pausing is
 * safe; whether to pause is runAsync's decision, by the time spent since the last pause.
 */
export type Steps<T> = Generator<void, T, undefined>;

/** Work between two turns of the event loop in runAsync, at most about this long (ms). */
export const SLICE_MS = 20;

/** Run steps to the end, without pausing. */
export function runSync<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * Run steps, pausing (setImmediate: after pending I/O) whenever a slice of sliceMs is spent, so that
 * no slice holds the event loop much longer than sliceMs plus one chunk. Work that takes less than
 * a slice never pauses.
 */
export async function runAsync<T>(steps: Steps<T>, sliceMs = SLICE_MS): Promise<T> {
  let start = performance.now();
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    if (performance.now() - start >= sliceMs) {
      await new Promise<void>((res) => setImmediate(res));
      start = performance.now();
    }
  }
}

/** Yield every `every` calls: for loops over many small items (`if (tick()) yield;`). */
export function ticker(every = 1024): () => boolean {
  let n = 0;
  return () => ++n % every === 0;
}
