/**
 * The fleet harness (N nodes, each its own namespace and `sluice run`, and a real redis-server): it
 * lives in src/lab/fleet.ts, where `npm run bench:fleet` uses it too; the tests import it from here.
 */
export * from '../../src/lab/fleet';
