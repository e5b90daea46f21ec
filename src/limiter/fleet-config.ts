/**
 * The fleet's settings (docs/fleet.md): where global rules exchange their counts. One shape for the
 * two layers that may not import each other: config (the daemon's `fleet:`, parsed and checked in
 * src/config/load.ts) produces it, fleet (src/fleet/exchange.ts) consumes it.
 */
export interface FleetConfig {
  mode: 'standalone' | 'cluster';
  /** The standalone node, or the cluster's seed nodes. */
  nodes: { host: string; port: number }[];
  name: string;
  node: string;
  intervalMs: number;
  timeoutMs: number;
  maxKeys: number;
  username: string | null;
  /** Read from password_file at load; never log it. */
  password: string | null;
  tls: { ca?: string; cert?: string; key?: string; servername?: string } | null;
}
