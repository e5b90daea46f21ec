/**
 * The lab: a client/server testbed in network namespaces, its traffic generators (HTTP load,
 * packet flood) and the receiver-side count. See lab.ts for the layout and its names.
 */
import { readCount, resetCount, type CountReport } from './count';
import { flood, type FloodOptions, type FloodResult } from './flood';
import { httpLoadFrom, type HttpLoadOptions, type HttpLoadResult } from './http-load';
import { countSite, floodTarget, labClient, type LabLayout } from './lab';

export { COUNT_FILTER, readCount, resetCount, type CountReport, type CountSite, type SourceCount } from './count';
export { buildFrame, flood, floodPath, PACED_MAX_PPS, type FloodOptions, type FloodPath, type FloodProto, type FloodResult, type FloodTarget } from './flood';
export { type HttpLoadOptions, type HttpLoadResult } from './http-load';
export {
  checkLabId,
  countSite,
  DEFAULT_LAB_ID,
  describeLab,
  floodTarget,
  labClient,
  labDown,
  labUp,
  listLabs,
  MAX_CLIENTS,
  MAX_PAGE_CPU_US,
  NETNS_PREFIX,
  parsePageCpu,
  planLab,
  readLayout,
  requireLayout,
  STATE_DIR,
  type LabClient,
  type LabLayout,
} from './lab';

/** HTTP load from client k (default 1) to the lab's server, over IPv4 (default) or IPv6. */
export function labHttp(l: LabLayout, o: HttpLoadOptions & { client?: number; family?: 4 | 6 }): Promise<HttpLoadResult> {
  const c = labClient(l, o.client ?? 1);
  const host = o.family === 6 ? `[${c.server.ipv6}]` : c.server.ipv4;
  const { client: _c, family: _f, ...load } = o;
  return httpLoadFrom(c.netns, `http://${host}:${l.server.http.port}/`, load);
}

/** A flood from client k (default 1) to the server. */
export function labFlood(l: LabLayout, o: FloodOptions & { client?: number }): Promise<FloodResult> {
  const { client: k, ...rest } = o;
  return flood(floodTarget(l, k ?? 1), rest);
}

/** What arrived at the server side, per source. */
export function labCount(l: LabLayout): CountReport {
  return readCount(countSite(l));
}

export function labCountReset(l: LabLayout): void {
  resetCount(countSite(l));
}
