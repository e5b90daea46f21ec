/**
 * Errors of the control plane, each with a stable code (docs/errors.md) and a message that says
 * what to do. The codes and the class live in the one registry (src/limiter/errors.ts).
 */
import { AgentCode, AgentError } from '../limiter/errors';

export { AgentCode, AgentError, type AgentCodeValue } from '../limiter/errors';

/**
 * Refuse a change that takes prefixes out of the management allowlist (the sources that manage
 * the machine, never dropped) unless the operator said so: a policy file that forgot its mgmt
 * list, or an empty one, must not lock its operator out.
 */
export function assertMgmtKept(dropped: string[], where: string, allow: boolean | undefined): void {
  if (!dropped.length || allow) return;
  throw new AgentError(AgentCode.MgmtShrink, `this change would take ${dropped.join(', ')} out of the management allowlist of ${where} (those sources could then be dropped, and you locked out); nothing was changed. Keep them in the file's mgmt list, or pass --allow-mgmt-shrink to remove them on purpose`);
}
