/**
 * Runs last (test files run in name order, one at a time): nothing that any test of this run
 * created — namespaces, links, pins, programs or maps named with the run id — may remain.
 */
import { test } from 'node:test';
import { assertNoLeftovers, runId } from './lib/netns';

test(`no namespace, link, pin, program or map of run ${runId()} is left`, async () => {
  await assertNoLeftovers(runId(), { waitMs: 2000 });
});
