/**
 * The testbed of the tests (network namespaces, veth pairs, the run id, the leftover check): it
 * lives in src/lab/testbed.ts, where the benchmarks use it too; the tests import it from here.
 */
export * from '../../src/lab/testbed';
