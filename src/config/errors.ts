/**
 * The one error an invalid daemon config file gives: every problem at once, each with where it is
 * (file, path, YAML line) and what is expected. Stable code SLUICE_E_CONFIG (docs/errors.md). The
 * class and its code live in the one error registry (src/limiter/errors.ts), so that the API and the
 * CLI recognise it without importing the config.
 */
export { CONFIG_ERROR, ConfigError, formatProblem, type ConfigProblem } from '../limiter/errors';
