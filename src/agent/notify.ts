/**
 * The service manager's readiness protocol (sd_notify(3)): newline-separated KEY=VALUE lines in one
 * datagram to the Unix socket named by $NOTIFY_SOCKET, which systemd sets for a Type=notify unit.
 * A path, or `@name` for an abstract socket. Without $NOTIFY_SOCKET (a container, a shell, a test)
 * nothing is sent. What the daemon says and when is in daemon.ts: READY=1 once every configured
 * interface is protected, RELOADING=1 … READY=1 around a reload, STOPPING=1 at SIGTERM, STATUS=
 * for `systemctl status`.
 */
import { unixDatagramSend } from '../ebpf';

export interface Notifier {
  /** Where messages go (for logs), or null when there is no service manager to tell. */
  readonly socket: string | null;
  /** Send fields; true when sent. A failure is thrown: the caller logs it (once). */
  send(fields: Record<string, string | number>): boolean;
}

/** The address of $NOTIFY_SOCKET as the kernel wants it, or why it cannot be used. */
export function notifyAddress(value: string | undefined): { address: string } | { problem: string } | null {
  if (value === undefined || value === '') return null;
  if (value.startsWith('@')) return { address: `\0${value.slice(1)}` };
  if (value.startsWith('/')) return { address: value };
  return { problem: `NOTIFY_SOCKET=${JSON.stringify(value)} is neither a path nor an @abstract name (vsock: needs systemd >= 253 and is not supported)` };
}

export function notifier(env: NodeJS.ProcessEnv = process.env): Notifier & { problem?: string } {
  const a = notifyAddress(env['NOTIFY_SOCKET']);
  if (a === null) return { socket: null, send: () => false };
  if ('problem' in a) return { socket: null, problem: a.problem, send: () => false };
  const socket = env['NOTIFY_SOCKET']!;
  return {
    socket,
    send(fields) {
      const text = Object.entries(fields).map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`).join('\n');
      unixDatagramSend(a.address, text);
      return true;
    },
  };
}

/** CLOCK_MONOTONIC in µs, for MONOTONIC_USEC= with RELOADING=1 (sd_notify(3)). */
export function monotonicUsec(): string {
  return (process.hrtime.bigint() / 1000n).toString();
}
