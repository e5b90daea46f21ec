/** The daemon's config file: schema (schema.ts), reading and validation (load.ts), its error. */
export { ConfigError, CONFIG_ERROR, formatProblem, type ConfigProblem } from './errors';
export {
  loadConfig, parseConfig, mergeLimits, limitsProblems, pathText, MIN_TOKEN_LENGTH, tokenProblem,
  type ConfigContext, type DaemonConfig, type InterfaceConfig, type TcpConfig, type LogLevel,
} from './load';
export { limitsSchema, configSchema, DEFAULT_SOCKET, type LimitsInput } from './schema';
