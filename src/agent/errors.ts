/**
 * Errors of the control plane, each with a stable code (docs/errors.md) and a message that says
 * what to do.
 */
export const AgentCode = {
  NoIface: 'SLUICE_E_NO_IFACE',
  NoNetns: 'SLUICE_E_NO_NETNS',
  XdpBusy: 'SLUICE_E_XDP_BUSY',
  NativeUnsupported: 'SLUICE_E_NATIVE_UNSUPPORTED',
  Bpffs: 'SLUICE_E_BPFFS',
  StateIncompatible: 'SLUICE_E_STATE_INCOMPATIBLE',
  PinsAbiMismatch: 'SLUICE_E_PINS_ABI_MISMATCH',
  NotProtected: 'SLUICE_E_NOT_PROTECTED',
  InvalidArgument: 'SLUICE_E_INVALID_ARGUMENT',
  ModeChange: 'SLUICE_E_MODE_CHANGE',
  Busy: 'SLUICE_E_LOCKED',
  Pending: 'SLUICE_E_PENDING',
  RollbackFailed: 'SLUICE_E_ROLLBACK_FAILED',
  DaemonRunning: 'SLUICE_E_DAEMON_RUNNING',
  ManagedElsewhere: 'SLUICE_E_MANAGED_ELSEWHERE',
  NotInList: 'SLUICE_E_NOT_IN_LIST',
  MgmtShrink: 'SLUICE_E_MGMT_SHRINK',
  ManagedByDaemon: 'SLUICE_E_MANAGED',
  DaemonUnreachable: 'SLUICE_E_DAEMON_UNREACHABLE',
} as const;

export type AgentCodeValue = (typeof AgentCode)[keyof typeof AgentCode];

export class AgentError extends Error {
  constructor(readonly code: AgentCodeValue, message: string) {
    super(message);
    this.name = 'AgentError';
  }
}

/**
 * Refuse a change that takes prefixes out of the management allowlist (the sources that manage
 * the machine, never dropped) unless the operator said so: a policy file that forgot its mgmt
 * list, or an empty one, must not lock its operator out.
 */
export function assertMgmtKept(dropped: string[], where: string, allow: boolean | undefined): void {
  if (!dropped.length || allow) return;
  throw new AgentError(AgentCode.MgmtShrink, `this change would take ${dropped.join(', ')} out of the management allowlist of ${where} (those sources could then be dropped, and you locked out); nothing was changed. Keep them in the file's mgmt list, or pass --allow-mgmt-shrink to remove them on purpose`);
}
