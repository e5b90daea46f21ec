/**
 * The daemon with its HTTP API, read-only listener and metrics: the one place where the agent (the
 * daemon, src/agent/daemon.ts) and the API (src/api) meet (DESIGN.md's import edges: the agent
 * imports no api module, the API no agent module). The daemon implements the API's backend
 * interfaces; this file hands it to them.
 */
import type { FastifyInstance } from 'fastify';
import { Daemon, type DaemonFrontend, type DaemonOptions } from '../agent/daemon';
import { Metrics } from '../api/metrics';
import { buildApi, buildReadOnly, fileToken, listenTcp, listenUnix, type ApiBackend, type ReadOnlyBackend } from '../api/server';
import { tokenProblem, type LimitsInput } from '../config';

// The daemon is the API's backend: checked here, where the two meet.
const asBackend = (d: Daemon): ApiBackend<LimitsInput> & ReadOnlyBackend => d;

/** src/api's server and metrics over a daemon. */
export const apiFrontend: DaemonFrontend = {
  metrics: (source) => new Metrics(source),
  inject: (d, token) => buildApi(asBackend(d), { logger: d.log, token, listener: 'inject' }),
  async serve(d: Daemon, servers: FastifyInstance[]): Promise<void> {
    const { socket, tcp } = d.config.api;
    if (socket) {
      const app = buildApi(asBackend(d), { logger: d.log, listener: 'unix' });
      servers.push(app);
      await listenUnix(app, socket);
      d.log.info({ event: 'listening', socket }, `API on unix:${socket} (root only)`);
    }
    if (tcp) {
      const app = buildApi(asBackend(d), {
        logger: d.log, listener: 'tcp', token: fileToken(tcp.tokenFile, d.log, tokenProblem), allowedHosts: tcp.allowedHosts,
        https: tcp.tls ? { cert: tcp.tls.cert, key: tcp.tls.key } : null,
      });
      servers.push(app);
      await listenTcp(app, tcp.host, tcp.port, { tls: !!tcp.tls, log: d.log });
      d.log.info({ event: 'listening', tcp: `${tcp.host}:${tcp.port}`, tls: !!tcp.tls, allowed_hosts: tcp.allowedHosts.map((h) => `${h.host}${h.port ? `:${h.port}` : ''}`) },
        `API on ${tcp.tls ? 'https' : 'http'}://${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port} (bearer token required)`);
    }
    const ro = d.config.metrics;
    if (ro) {
      const app = buildReadOnly(asBackend(d), { logger: d.log, allowedHosts: ro.allowedHosts });
      servers.push(app);
      // Read-only and tokenless: nothing here can change the daemon, so no TLS warning applies.
      await app.listen({ host: ro.host, port: ro.port });
      d.log.info({ event: 'listening', metrics: `${ro.host}:${ro.port}` },
        `read-only listener (GET /metrics, GET /healthz; no token) on http://${ro.host.includes(':') ? `[${ro.host}]` : ro.host}:${ro.port}`);
    }
  },
};

/**
 * Read the config, protect every interface, then serve (unless `listen: false`) and watch: the
 * daemon of `sluice run`, with the API of src/api.
 */
export function startDaemon(opts: Omit<DaemonOptions, 'frontend'>): Promise<Daemon> {
  return Daemon.start({ ...opts, frontend: apiFrontend });
}
