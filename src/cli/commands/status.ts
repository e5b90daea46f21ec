import type { Command } from 'commander';
import { describePending } from '../../agent/pending';
import { openAll, statusJson, statusReport } from '../../agent/report';
import { managerInfo, readFleetStatus } from '../../agent/state';
import { describeLimits, num, printJson, table } from '../common';

export function register(program: Command): void {
  program
    .command('status')
    .description('every protected interface: how it is attached, what it enforces, state map fill')
    .option('--json', 'print JSON')
    .addHelpText('after', `
Sluice attaches by XDP link: \`ip link set dev IFACE xdp off\` cannot remove it; use \`sluice down\`.

Examples:
  sluice status
  sluice status --json`)
    .action(async (o: { json?: boolean }) => {
      const ps = openAll();
      try {
        const reports = [];
        for (const p of ps) reports.push(await statusReport(p));
        const owners = reports.map((r) => managerInfo({ iface: r.iface, netns: r.netns }) ?? null);
        const fleet = readFleetStatus();
        if (o.json) return printJson({ ...(fleet ? { fleet } : {}), interfaces: reports.map((r, i) => ({ ...statusJson(r), managed_by: owners[i] ? { kind: 'daemon', pid: owners[i]!.pid, note: owners[i]!.note } : null })) });
        if (fleet) {
          const line = `fleet ${String(fleet['name'])} (${String(fleet['mode'])}, ${(fleet['redis'] as string[]).join(', ')}, node ${String(fleet['node'])}, every ${String(fleet['interval_ms'])} ms): `;
          if (fleet['connected']) console.log(`${line}connected; last round ${String(fleet['last_round_at'])} (${Number(fleet['last_round_ms']).toFixed(1)} ms), ${String(fleet['keys_exchanged'])} keys exchanged, ${String(fleet['keys_tracked'])} tracked`);
          else console.error(`warning: ${line}NOT CONNECTED since ${String(fleet['since'])} (${String(fleet['last_error'] ?? 'no answer')}): every global rule is on its local limit`);
        }
        if (!reports.length) return console.log('no interface is protected');
        console.log(table(reports.map((r, i) => [
          `${r.iface}${r.netns ? `@${r.netns}` : ''}`, r.ifindex, `${r.mode} (link)`, r.program_id, r.rules,
          `${num(r.state_entries)}/${num(r.state_max_entries)}`, num(r.evictions), owners[i] ? `daemon ${owners[i]!.pid}` : 'cli',
        ]), ['interface', 'ifindex', 'xdp', 'program', 'rules', 'state', 'evicted', 'owner']));
        for (const [i, r] of reports.entries()) if (owners[i]) console.log(`${r.iface}${r.netns ? `@${r.netns}` : ''}: managed by the sluice daemon (process ${owners[i]!.pid}${owners[i]!.note ? `, ${owners[i]!.note}` : ''}): change it through its config or API`);
        for (const r of reports) console.log(`${r.iface}${r.netns ? `@${r.netns}` : ''}: ${describeLimits(r.limits)}; lists: ${r.lists.mgmt} mgmt, ${r.lists.deny} deny, ${r.lists.allow} allow`);
        for (const r of reports) {
          if (!r.rollback) continue;
          const line = `${r.iface}${r.netns ? `@${r.netns}` : ''}: ${describePending(r.rollback, `--iface ${r.iface}${r.netns ? ` --netns ${r.netns}` : ''}`)}`;
          if (r.rollback.state === 'pending') console.log(line);
          else console.error(`warning: ${line}`);
        }
      } finally {
        ps.forEach((p) => p.close());
      }
    });
}
