/**
 * Network namespaces and interface names.
 *
 * Calls that take an interface take an optional `netns`: a name under
 * /var/run/netns (as `ip netns` makes them) or a path such as
 * /proc/PID/ns/net. The native layer enters it for that one call and comes
 * back before any JS runs again.
 */
import { native } from './native';

export const NETNS_RUN_DIR = '/var/run/netns';

/** The path of a namespace given by name ("lab-a") or path ("/proc/1/ns/net"). */
export function netnsPath(netns: string): string {
  if (netns.includes('/')) return netns;
  if (netns === '' || netns === '.' || netns === '..') throw new TypeError(`invalid network namespace name '${netns}'`);
  return `${NETNS_RUN_DIR}/${netns}`;
}

/** netnsPath(netns), or undefined for "the current namespace". */
export function optNetnsPath(netns: string | undefined): string | undefined {
  return netns === undefined ? undefined : netnsPath(netns);
}

/**
 * Run fn with the calling thread (Node's JS thread) in another network
 * namespace, and always come back. fn must be synchronous: anything that
 * awaits would let other JS run in the wrong namespace, so a returned
 * Promise is an error (after the thread has returned).
 */
export function withNetns<T>(netns: string, fn: () => T): T {
  const saved = native().netnsEnter(netnsPath(netns));
  let result: T;
  try {
    result = fn();
  } finally {
    native().netnsReturn(saved);
  }
  if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
    (result as unknown as Promise<unknown>).then(undefined, () => undefined); // no unhandled rejection on top
    throw new TypeError('withNetns takes a synchronous function; it returned a Promise');
  }
  return result;
}

/** The index of interface `name` (in netns, if given). */
export function ifindex(name: string, netns?: string): number {
  return native().ifNameToIndex(name, optNetnsPath(netns));
}

/** The name of interface `index` (in netns, if given). */
export function ifname(index: number, netns?: string): string {
  return native().ifIndexToName(index, optNetnsPath(netns));
}

/** An interface given by index or name, as an index. */
export function resolveIfindex(iface: number | string, netns?: string): number {
  return typeof iface === 'number' ? iface : ifindex(iface, netns);
}
