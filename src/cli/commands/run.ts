import type { Command } from 'commander';
import type { Daemon } from '../../agent/daemon';
import { startDaemon } from '../daemon';
import { ConfigError } from '../../config';
import { EXIT } from '../common';

interface RunOpts { config: string; detachOnExit?: boolean }

export function register(program: Command): void {
  program
    .command('run')
    .description('the daemon: protect every interface of a config file, keep it so, serve the HTTP API and metrics')
    .requiredOption('-c, --config <file>', 'the config file (YAML; see docs/config.md)')
    .option('--detach-on-exit', 'take protection down on SIGTERM/SIGINT (default: it stays in force, and the next start adopts it)')
    .addHelpText('after', `
Reloads when the file changes, on SIGHUP, and on POST /v1/reload; an invalid file is refused with
every problem listed, and the running policy stays. Logs are JSON lines on stdout.

Examples:
  sluice run --config /etc/sluice/sluice.yaml
  kill -HUP PID                                  # reload now (the pid is in every log line and in /v1/status)
  curl --unix-socket /run/sluice/api.sock http://sluice/v1/status`)
    .action(async (o: RunOpts) => {
      let d: Daemon;
      try {
        d = await startDaemon({ configFile: o.config, detachOnExit: !!o.detachOnExit });
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        // An invalid file is a usage error: every problem listed, nothing attached.
        console.error(`sluice: ${e.code}: ${e.message}`);
        process.exitCode = EXIT.usage;
        return;
      }
      // The daemon's own timers are unref'd and, with `api.socket: null` and no TCP listener,
      // nothing else holds the event loop: this timer keeps the daemon running until a signal.
      const alive = setInterval(() => undefined, 1 << 30);
      await new Promise<void>((resolve) => {
        const onHup = (): void => { d.reload('sighup').catch(() => undefined); };
        const onStop = (signal: string) => (): void => {
          d.log.info({ event: 'signal', signal }, `${signal}: stopping`);
          process.removeListener('SIGHUP', onHup);
          d.stop().catch((e: unknown) => d.log.error({ event: 'stop_failed' }, (e as Error).message)).finally(() => { clearInterval(alive); resolve(); });
        };
        process.on('SIGHUP', onHup);
        process.once('SIGTERM', onStop('SIGTERM'));
        process.once('SIGINT', onStop('SIGINT'));
      });
    });
}
