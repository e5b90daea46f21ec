/**
 * Every key of a JSON document, at every depth, checked for snake_case: the one spelling of the
 * project's JSON (the config file, the CLI's --json, the HTTP API, the lab).
 *
 * Some objects are maps whose keys are data, not names (reasons by reason name, …): those are
 * named by path, each with what its keys must be as data (a reason name, a CIDR …), and a key that
 * is not such data is reported as well. Their values are checked like any other. Nothing else is
 * exempt, and the report says how many keys were looked at and which data maps were met, so that a
 * check that saw nothing cannot pass by accident.
 */

/** snake_case: lower-case letters and digits, words joined by one underscore. */
export const SNAKE = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;

export interface DataMap {
  /** The path of the map, array indices written as [] (e.g. /(^|\.)reasons$/ or "rules[].reasons"). */
  path: RegExp | string;
  /** What its keys are, as data (a key that is not is reported). */
  isData(key: string): boolean;
  what: string;
}

export interface KeyReport {
  /** "path: why", for every key that is not snake_case (or a data map's key that is not data). */
  bad: string[];
  /** Keys looked at (names and data keys). */
  keys: number;
  /** The data maps met, by path, with the number of keys each had. */
  dataMaps: Map<string, number>;
}

const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);

export function checkKeys(doc: unknown, dataMaps: readonly DataMap[] = [], report: KeyReport = { bad: [], keys: 0, dataMaps: new Map() }): KeyReport {
  const walk = (v: unknown, path: string): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x, `${path}[]`);
      return;
    }
    if (v === null || typeof v !== 'object') return;
    const data = dataMaps.find((d) => (typeof d.path === 'string' ? d.path === path : d.path.test(path)));
    if (data) report.dataMaps.set(path, (report.dataMaps.get(path) ?? 0) + Object.keys(v).length);
    for (const [k, x] of Object.entries(v)) {
      report.keys++;
      if (data) {
        if (!data.isData(k)) report.bad.push(`${join(path, k)}: not ${data.what} (the keys of ${path || 'the document'} are data)`);
      } else if (!SNAKE.test(k)) {
        report.bad.push(`${join(path, k)}: not snake_case`);
      }
      walk(x, data ? `${path}{}` : join(path, k));
    }
  };
  walk(doc, '');
  return report;
}
