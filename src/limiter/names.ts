/**
 * Names that become paths: an interface name and a network namespace name are joined into pin and
 * settings paths (src/agent/state.ts) and, on `down`, into a recursive delete. One validator for
 * every way in (the command line, the config file, the HTTP API), so that no input can name a
 * path outside its own place: "", ".", "..", "a/b" are refused, not resolved.
 *
 * The rules are the kernel's and iproute2's, not stricter: an interface name is what the kernel
 * accepts (dev_valid_name: 1 to 15 bytes, not "." or "..", no "/", ":" or white space), and a
 * namespace name is a file name under /var/run/netns (1 to 255 bytes, not "." or "..", no "/";
 * Kubernetes CNI names run to about 40 bytes, the lab's to 23).
 */
import { z } from 'zod';
import { shown } from './text';

/** IFNAMSIZ (16) less the NUL. */
export const IFACE_MAX_BYTES = 15;
/** NAME_MAX: a namespace is a file under /var/run/netns. */
export const NETNS_MAX_BYTES = 255;

const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

/** What is wrong with an interface name, or undefined when it is one. */
export function ifaceNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return 'expected an interface name (e.g. eth1)';
  if (name === '') return 'the interface name is empty (an unset variable?); give the name of an interface, e.g. eth1 (see `ip link`)';
  if (name === '.' || name === '..') return `${JSON.stringify(name)} is not an interface name: "." and ".." name directories, not interfaces`;
  if (bytes(name) > IFACE_MAX_BYTES) return `${JSON.stringify(name)} is not an interface name: it has ${bytes(name)} bytes, the kernel allows at most ${IFACE_MAX_BYTES}`;
  const bad = /[/:\s\0]/u.exec(name);
  if (bad) return `${JSON.stringify(name)} is not an interface name: it contains ${describeChar(bad[0])}, which the kernel refuses in interface names (no "/", ":", white space or NUL)`;
  return undefined;
}

/** What is wrong with a network namespace name, or undefined when it is one. */
export function netnsNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return 'expected the name of a network namespace (see `ip netns list`)';
  if (name === '') return 'the network namespace name is empty (an unset variable?); give a name from `ip netns list`, or leave --netns out for the host';
  if (name === '.' || name === '..') return `${JSON.stringify(name)} is not a network namespace name: "." and ".." name directories, not namespaces`;
  if (bytes(name) > NETNS_MAX_BYTES) return `the network namespace name has ${bytes(name)} bytes; a name is at most ${NETNS_MAX_BYTES}`;
  const bad = /[/\0]/.exec(name);
  if (bad) return `${JSON.stringify(name)} is not a network namespace name: it contains ${describeChar(bad[0])} (a name is one file name under /var/run/netns: no "/" or NUL)`;
  if (name === 'host') return 'a network namespace named "host" cannot be told apart from the host scope of the pins: rename it';
  return undefined;
}

function describeChar(c: string): string {
  if (c === '\0') return 'a NUL byte';
  if (/\s/u.test(c)) return `white space (${JSON.stringify(c)})`;
  return `"${c}"`;
}

/** Every problem of a place (interface and namespace), in order; empty when it is valid. */
export function placeProblems(p: { iface: unknown; netns?: unknown }): { key: 'iface' | 'netns'; message: string }[] {
  const out: { key: 'iface' | 'netns'; message: string }[] = [];
  const i = ifaceNameProblem(p.iface);
  if (i) out.push({ key: 'iface', message: i });
  if (p.netns !== null && p.netns !== undefined) {
    const n = netnsNameProblem(p.netns);
    if (n) out.push({ key: 'netns', message: n });
  }
  return out;
}

/** An interface name as the kernel takes it (ifaceNameProblem: the one validator of names). */
export const ifaceName = z.string({ error: (iss) => (iss.input === undefined ? 'required: the interface name, e.g. eth1' : `expected an interface name, got ${shown(iss.input)}`) })
  .superRefine((v, ctx) => { const p = ifaceNameProblem(v); if (p) ctx.addIssue({ code: 'custom', message: p, input: v }); });

/** A network namespace name (netnsNameProblem). */
export const netnsName = z.string({ error: (iss) => `expected the name of a network namespace (see \`ip netns list\`), got ${shown(iss.input)}` })
  .superRefine((v, ctx) => { const p = netnsNameProblem(v); if (p) ctx.addIssue({ code: 'custom', message: p, input: v }); });

/** A host as a Host header names it: a name, an IPv4 address, an IPv6 address (bracketed or not), with an optional :PORT. */
export function parseHost(text: string): { host: string; port: number | null } | null {
  const t = text.trim().toLowerCase();
  const m = /^\[([0-9a-f:.]+)\](?::(\d{1,5}))?$/.exec(t) ?? /^([0-9a-f]*:[0-9a-f:.]*:[0-9a-f:.]*)()$/.exec(t) ?? /^([a-z0-9_.-]+)(?::(\d{1,5}))?$/.exec(t);
  if (!m || !m[1]) return null;
  const port = m[2] ? Number(m[2]) : null;
  if (port !== null && (port < 1 || port > 65535)) return null;
  return { host: m[1].replace(/\.$/, ''), port };
}
