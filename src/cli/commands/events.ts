import { request } from 'node:http';
import type { Command } from 'commander';
import { EventFilter, EventReader, eventBudget, eventLine, type EventBudget, type EventView } from '../../agent/events';
import { AgentCode, AgentError } from '../../agent/errors';
import { Protection } from '../../agent/protection';
import { managerInfo } from '../../agent/state';
import { parseCount } from '../../limiter/units';
import { parsed, place, placeOptions, type PlaceOptions } from '../common';

interface EventsOpts extends PlaceOptions { json?: boolean; count?: number; rule?: string; reason?: string; source?: string }

/** The daemon's API socket, from the note of the lock it holds on the interface (daemon.ts, takeLocks). */
const apiSocketOf = (note: string | null): string | undefined => (note ? /, api (\/\S+)$/.exec(note)?.[1] : undefined);

/**
 * Events through the daemon's API (GET /v1/events, server-sent events): the daemon is the ring
 * buffer's one consumer. Resolves when the stream ends or the signal aborts.
 */
function viaDaemon(socketPath: string, q: Record<string, string>, signal: AbortSignal, onEvent: (e: EventView) => boolean, onBudget: (b: EventBudget) => void): Promise<'ended' | 'aborted'> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: `/v1/events?${new URLSearchParams(q)}`, headers: { host: 'localhost', accept: 'text/event-stream' }, signal }, (res) => {
      if (res.statusCode !== 200) {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => {
          let msg = body;
          let code: string = AgentCode.DaemonUnreachable;
          try { const e = (JSON.parse(body) as { error: { code: string; message: string } }).error; msg = e.message; code = e.code; } catch { /* not JSON */ }
          reject(new AgentError(code as never, `the daemon refused the events of ${q.iface}: ${msg}`));
        });
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const type = /^event: (\S+)$/m.exec(block)?.[1] ?? 'message';
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (data === undefined) continue;
          const v = JSON.parse(data) as unknown;
          if (type === 'budget') { if (v) onBudget(v as EventBudget); } else if (!onEvent(v as EventView)) { req.destroy(); resolve('aborted'); return; }
        }
      });
      res.on('end', () => resolve('ended'));
      res.on('error', () => resolve(signal.aborted ? 'aborted' : 'ended'));
    });
    req.on('error', (e) => {
      if (signal.aborted) resolve('aborted');
      else reject(new AgentError(AgentCode.DaemonUnreachable, `cannot reach the daemon's API at ${socketPath}: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    });
    req.end();
  });
}

export function register(program: Command): void {
  const cmd = program
    .command('events')
    .description('sampled drop events as they are decided: when, who, by which rule, and why')
    .addHelpText('after', `
Each line gives the time the packet was decided (the kernel's clock, as wall time), the source,
the rule, the reason, the verdict, the protocol and port, and the frame's size. Only events decided
after the command starts are shown. The kernel emits at most a budget of events per CPU per second
(100 by default), so a flood cannot flood this output; what it leaves out is counted, and the
counts are printed when the command ends (stderr) and as {"budget": …} lines with --json.

When the sluice daemon manages the interface, it is the one reader of the kernel's event buffer
and this command reads through its API socket (GET /v1/events); otherwise it reads the buffer.
Runs until Ctrl-C or --count.

Examples:
  sluice events --iface eth1
  sluice events --iface eth1 --reason limit --source 198.51.100.0/24
  sluice events --iface eth1 --rule ssh --count 10
  sluice events --iface eth1 --json | jq 'select(.reason == "limit")'`);
  placeOptions(cmd)
    .option('--json', 'one JSON object per line')
    .option('--count <n>', 'stop after this many events', parsed((v) => parseCount(v, 'count')))
    .option('--rule <rule>', 'only events of this rule (its name, its id, or "global")')
    .option('--reason <reason>', 'only events of this reason (limit, blocked, denylist, …)')
    .option('--source <prefix>', 'only events of sources inside this address or prefix')
    .action(async (o: EventsOpts) => {
      const pl = place(o);
      let filter: EventFilter;
      try {
        filter = new EventFilter({ rule: o.rule, reason: o.reason, source: o.source });
      } catch (e) {
        throw new AgentError(AgentCode.InvalidArgument, `${(e as Error).message}`);
      }
      const ac = new AbortController();
      process.once('SIGINT', () => ac.abort());
      process.once('SIGTERM', () => ac.abort());
      let n = 0;
      const show = (e: EventView): boolean => {
        if (o.json) console.log(JSON.stringify(e));
        else console.log(eventLine(e));
        return !(o.count && ++n >= o.count);
      };
      let budget: EventBudget | undefined;
      let stale = 0;
      const manager = managerInfo(pl);
      if (manager) {
        const socket = apiSocketOf(manager.note);
        if (!socket) {
          throw new AgentError(AgentCode.ManagedByDaemon, `${pl.iface} is managed by the sluice daemon (process ${manager.pid}), which is the one reader of its events, and its API has no Unix socket (api.socket): read them with GET /v1/events on its TCP listener (docs/api.md)`);
        }
        const q: Record<string, string> = { iface: pl.iface };
        if (pl.netns) q.netns = pl.netns;
        if (o.rule !== undefined) q.rule = o.rule;
        if (o.reason !== undefined) q.reason = o.reason;
        if (o.source !== undefined) q.source = o.source;
        let stop = false;
        const onEvent = (e: EventView): boolean => { if (!show(e)) stop = true; return !stop; };
        // The stream ends when the daemon stops or protects the interface afresh: read on.
        while (!stop && !ac.signal.aborted) {
          const how = await viaDaemon(socket, q, ac.signal, onEvent, (b) => {
            if (o.json && (!budget || b.suppressed !== budget.suppressed || b.lost !== budget.lost)) console.log(JSON.stringify({ budget: b }));
            budget = b;
          });
          if (how === 'ended' && !stop && !ac.signal.aborted) {
            console.error(`note: the daemon ended the stream of ${pl.iface} (it stopped, or protected the interface afresh); reading again in 1 s`);
            await new Promise((r) => setTimeout(r, 1000));
          }
        }
      } else {
        const p = Protection.open(pl);
        const reader = new EventReader(p);
        try {
          for await (const e of reader.events(ac.signal)) {
            if (!filter.matches(e)) continue;
            if (!show(e)) break;
          }
          budget = eventBudget(p);
          stale = reader.decoder.stale;
        } finally {
          await reader.close();
          p.close();
        }
      }
      const left = budget ? `; since attach the kernel's budget suppressed ${budget.suppressed} events and ${budget.lost} were lost to a full buffer` : '';
      const old = stale ? `; ${stale} events decided before this command started were skipped` : '';
      if (o.json) {
        if (budget) console.log(JSON.stringify({ budget, stale_skipped: stale }));
      } else {
        console.error(`${n} events shown${left}${old}`);
      }
    });
}
