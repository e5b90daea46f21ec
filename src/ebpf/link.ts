/**
 * Attaching programs to interfaces: XDP by bpf_link (owned, pinnable,
 * atomically updatable), XDP by netlink, and tc clsact filters.
 *
 * Interfaces are given by index or name. `netns` (a name under /var/run/netns
 * or a path) makes the call inside that namespace; names and indexes are then
 * resolved there too.
 */
import './dispose';
import { AttachType, TcAttachPoint, TcFlags, XdpAttached, XdpFlags } from './constants';
import { BpfError } from './errors';
import { expectKind, OwnedFd } from './fd';
import { native, type RawLinkInfo } from './native';
import { optNetnsPath, resolveIfindex } from './netns';
import type { Program } from './program';

/** native = driver mode (XDP_FLAGS_DRV_MODE), generic = skb mode, offload = hardware. */
export type XdpMode = 'native' | 'generic' | 'offload';

export interface NetnsOption {
  netns?: string;
}

export interface XdpAttachOptions extends NetnsOption {
  /** Unset: the kernel picks (native when the driver supports it, else generic). */
  mode?: XdpMode;
}

export type LinkInfo = RawLinkInfo;

function xdpModeFlags(mode: XdpMode | undefined): number {
  switch (mode) {
    case undefined:
      return 0;
    case 'native':
      return XdpFlags.DrvMode;
    case 'generic':
      return XdpFlags.SkbMode;
    case 'offload':
      return XdpFlags.HwMode;
    default:
      throw new TypeError(`unknown XDP mode '${String(mode)}' (native, generic, offload)`);
  }
}

/** A bpf_link: the attachment lives as long as the link fd or its pin. */
export class Link {
  readonly #fd: OwnedFd;

  /** Takes ownership of fd. */
  constructor(fd: number) {
    this.#fd = new OwnedFd(fd, 'link');
  }

  /**
   * Attach an XDP program to an interface with bpf_link_create. The program
   * stays attached until the link is closed (and unpinned) or detached.
   */
  static attachXdp(program: Program, iface: number | string, opts: XdpAttachOptions = {}): Link {
    const netns = optNetnsPath(opts.netns);
    const ifindex = resolveIfindex(iface, opts.netns);
    return new Link(native().linkCreate(program.fd, ifindex, AttachType.Xdp, xdpModeFlags(opts.mode), netns));
  }

  static fromPin(path: string): Link {
    return new Link(expectKind(native().objGet(path), 'link', path));
  }

  static fromId(id: number): Link {
    return new Link(native().linkGetFdById(id));
  }

  get fd(): number {
    return this.#fd.value;
  }

  get closed(): boolean {
    return this.#fd.closed;
  }

  info(): LinkInfo {
    return native().linkGetInfo(this.fd);
  }

  /**
   * Swap in another program atomically (no moment without a program). With
   * `expected`, fail with EPERM unless that program is the one attached.
   */
  update(program: Program, opts: { expected?: Program } = {}): void {
    native().linkUpdate(this.fd, program.fd, opts.expected?.fd);
  }

  /** Pin to a path in bpffs: the attachment then outlives this process. */
  pin(path: string): void {
    native().objPin(this.fd, path);
  }

  /** Detach the program now, even if the link is pinned elsewhere; the link fd stays open until close(). */
  detach(): void {
    native().linkDetach(this.fd);
  }

  /** Close this handle. The attachment ends unless the link is pinned or held elsewhere. */
  close(): void {
    this.#fd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

// ------------------------------------------------------------ netlink XDP

export interface XdpNetlinkAttachOptions extends XdpAttachOptions {
  /** Replace only if this program is the one attached (XDP_FLAGS_REPLACE). */
  replace?: Program;
  /** Fail with EBUSY if any program is attached (XDP_FLAGS_UPDATE_IF_NOEXIST). */
  ifNotExists?: boolean;
}

/** Attach by netlink (like `ip link set dev X xdp`): no link object, stays until detached. */
export function xdpAttach(iface: number | string, program: Program, opts: XdpNetlinkAttachOptions = {}): void {
  let flags = xdpModeFlags(opts.mode);
  if (opts.replace) flags |= XdpFlags.Replace;
  if (opts.ifNotExists) flags |= XdpFlags.UpdateIfNoExist;
  const ifindex = resolveIfindex(iface, opts.netns);
  native().xdpAttach(ifindex, program.fd, flags, opts.replace?.fd, optNetnsPath(opts.netns));
}

export interface XdpDetachOptions extends XdpAttachOptions {
  /** Detach only if this program is the one attached. */
  expected?: Program;
}

/** Remove a netlink-attached XDP program (a program attached through a bpf_link cannot be removed this way). */
export function xdpDetach(iface: number | string, opts: XdpDetachOptions = {}): void {
  let flags = xdpModeFlags(opts.mode);
  if (opts.expected) flags |= XdpFlags.Replace;
  const ifindex = resolveIfindex(iface, opts.netns);
  native().xdpDetach(ifindex, flags, opts.expected?.fd, optNetnsPath(opts.netns));
}

export type XdpAttachMode = 'none' | 'native' | 'generic' | 'offload' | 'multi';

export interface XdpStatus {
  mode: XdpAttachMode;
  /** The program attached in the single mode in use (0 when none or several). */
  progId: number;
  nativeProgId: number;
  genericProgId: number;
  offloadProgId: number;
}

const ATTACH_MODES: Record<number, XdpAttachMode> = {
  [XdpAttached.None]: 'none',
  [XdpAttached.Drv]: 'native',
  [XdpAttached.Skb]: 'generic',
  [XdpAttached.Hw]: 'offload',
  [XdpAttached.Multi]: 'multi',
};

/** Which XDP programs are attached to an interface, in which mode (by link or netlink alike). */
export function xdpQuery(iface: number | string, opts: NetnsOption = {}): XdpStatus {
  const ifindex = resolveIfindex(iface, opts.netns);
  const q = native().xdpQuery(ifindex, 0, optNetnsPath(opts.netns));
  return {
    mode: ATTACH_MODES[q.attachMode] ?? 'none',
    progId: q.progId,
    nativeProgId: q.drvProgId,
    genericProgId: q.skbProgId,
    offloadProgId: q.hwProgId,
  };
}

// ---------------------------------------------------------------------- tc

export type TcDirection = 'ingress' | 'egress';

const TC_POINT: Record<TcDirection | 'both', number> = {
  ingress: TcAttachPoint.Ingress,
  egress: TcAttachPoint.Egress,
  both: TcAttachPoint.Both,
};

function tcPoint(direction: TcDirection | 'both'): number {
  const p = TC_POINT[direction];
  if (p === undefined) throw new TypeError(`tc direction must be ingress or egress, got '${String(direction)}'`);
  return p;
}

export interface TcFilter {
  handle: number;
  priority: number;
  progId: number;
}

export interface TcFilterId extends NetnsOption {
  handle: number;
  priority: number;
}

/**
 * Make sure the interface has a clsact qdisc (bpf_tc_hook_create). Returns
 * false when it already had one, which is fine: other tools may share it.
 */
export function tcHookCreate(iface: number | string, direction: TcDirection, opts: NetnsOption = {}): boolean {
  return native().tcHookCreate(resolveIfindex(iface, opts.netns), tcPoint(direction), optNetnsPath(opts.netns));
}

/**
 * Remove the clsact qdisc ('both') or all filters of one direction. This also
 * removes filters other tools put there: only for hooks you own.
 */
export function tcHookDestroy(iface: number | string, direction: TcDirection | 'both', opts: NetnsOption = {}): void {
  native().tcHookDestroy(resolveIfindex(iface, opts.netns), tcPoint(direction), optNetnsPath(opts.netns));
}

export interface TcAttachOptions extends NetnsOption {
  /** 0 (default): the kernel picks one. */
  handle?: number;
  /** 0 (default): the kernel picks one. */
  priority?: number;
  /** Replace the filter with the same handle and priority (BPF_TC_F_REPLACE). */
  replace?: boolean;
}

/** Attach a SCHED_CLS program as a direct-action filter; the hook must exist (tcHookCreate). */
export function tcAttach(iface: number | string, direction: TcDirection, program: Program, opts: TcAttachOptions = {}): TcFilter {
  return native().tcAttach(
    resolveIfindex(iface, opts.netns),
    tcPoint(direction),
    program.fd,
    { handle: opts.handle ?? 0, priority: opts.priority ?? 0, flags: opts.replace ? TcFlags.Replace : 0 },
    optNetnsPath(opts.netns),
  );
}

export function tcDetach(iface: number | string, direction: TcDirection, id: TcFilterId): void {
  native().tcDetach(resolveIfindex(iface, id.netns), tcPoint(direction), { handle: id.handle, priority: id.priority }, optNetnsPath(id.netns));
}

/** The filter with this handle and priority, or undefined. */
export function tcQuery(iface: number | string, direction: TcDirection, id: TcFilterId): TcFilter | undefined {
  try {
    return native().tcQuery(resolveIfindex(iface, id.netns), tcPoint(direction), { handle: id.handle, priority: id.priority }, optNetnsPath(id.netns)) ?? undefined;
  } catch (e) {
    // No filter at all at this priority: the kernel says EINVAL ("Cannot find specified filter chain"), not ENOENT.
    if (e instanceof BpfError && e.errnoName === 'EINVAL' && /Cannot find specified filter chain/.test(e.libbpfLog ?? '')) return undefined;
    throw e;
  }
}
