/**
 * Test-only fault injection (docs/errors.md, "Test hooks"): named points inside a change where a
 * test makes the process die or fail, to show that the next command finishes or undoes the change.
 *
 *   SLUICE_TEST_CRASH_AT=<point>  the process SIGKILLs itself at that point (no cleanup runs)
 *   SLUICE_TEST_FAIL_AT=<point>   an Error is thrown at that point
 *
 * Points: journal (journal written, kernel not flipped), flip (kernel flipped, settings not saved),
 * settings-tmp (the new settings written to their temporary file, not renamed), save (settings
 * saved, journal not removed), pending (the pending rollback persisted, the change not live),
 * rollback (a rollback about to restore the previous settings). Never set them in production.
 */
export function point(name: string): void {
  if (process.env['SLUICE_TEST_CRASH_AT'] === name) process.kill(process.pid, 'SIGKILL');
  if (process.env['SLUICE_TEST_FAIL_AT'] === name) throw new Error(`test hook: SLUICE_TEST_FAIL_AT=${name}`);
}
