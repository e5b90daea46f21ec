/**
 * How a message shows a value and where it is: one wording for the config file, the policy file, the
 * command line and the HTTP API (they say the same things about the same mistakes).
 */

/** A value as the message about it shows it. */
export function shown(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return JSON.stringify(v);
  return String(v);
}

/** A path into a document as messages write it: interfaces[0].limits.rate. */
export function pathText(path: readonly PropertyKey[]): string {
  let out = '';
  for (const s of path) out += typeof s === 'number' ? `[${s}]` : `${out ? '.' : ''}${String(s)}`;
  return out;
}
