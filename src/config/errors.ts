/**
 * The one error an invalid daemon config file gives: every problem at once, each with where it is
 * (file, path, YAML line) and what is expected. Stable code SLUICE_E_CONFIG (docs/errors.md).
 */
export const CONFIG_ERROR = 'SLUICE_E_CONFIG';

export interface ConfigProblem {
  /** Where in the document: "interfaces[0].limits.rate"; "" for the document as a whole. */
  path: string;
  /** 1-based line in the file, when the YAML document tells. */
  line?: number;
  /** What is wrong and what is expected. */
  message: string;
}

export function formatProblem(file: string, p: ConfigProblem): string {
  return `${file}${p.line !== undefined ? `:${p.line}` : ''}: ${p.path ? `${p.path}: ` : ''}${p.message}`;
}

export class ConfigError extends Error {
  readonly code = CONFIG_ERROR;
  /**
   * The files read on the way, when known (path -> SHA-256 of the content; "" for one that could
   * not be read): a daemon that refused them waits for one of them to change before trying again.
   */
  inputs?: Record<string, string>;
  constructor(readonly file: string, readonly problems: ConfigProblem[]) {
    super(`invalid config ${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${problems.map((p) => `  - ${formatProblem(file, p)}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}
