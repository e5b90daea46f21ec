/**
 * A `sluice run` as a child process, as the daemon tests, the fleet harness and the benchmarks
 * drive it: its JSON log lines and waits on them, its exit, HTTP over its Unix socket (or a port),
 * and config files written the way editors write them (a new file renamed over the old).
 */
import type { ChildProcess } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { stringify } from 'yaml';

export type LogLine = Record<string, unknown> & { level: number; msg: string; event?: string };

export interface DaemonProcess {
  child: ChildProcess;
  logs: LogLine[];
  /** Lines of stderr (warnings from Node, crashes). */
  stderr: string[];
  waitLog(pred: (l: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A daemon started some other way (an image's entry command): its log lines, waits and exit. */
export function watchDaemon(child: ChildProcess): DaemonProcess {
  const logs: LogLine[] = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try { logs.push(JSON.parse(line) as LogLine); } catch { stderr.push(`stdout: ${line}`); }
    }
    waiters.forEach((w) => w());
  });
  child.stderr!.on('data', (d: Buffer) => { stderr.push(d.toString()); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once('exit', (code, signal) => { res({ code, signal }); waiters.forEach((w) => w()); });
  });
  const waitLog = (pred: (l: LogLine) => boolean, what: string, timeoutMs = 15_000): Promise<LogLine> => new Promise((res, rej) => {
    const check = (): void => {
      const hit = logs.find(pred);
      if (hit) { done(); res(hit); return; }
      if (child.exitCode !== null || child.signalCode !== null) { done(); rej(new Error(`daemon exited before logging ${what}; stderr:\n${stderr.join('')}\nlog:\n${logs.map((l) => l.msg).join('\n')}`)); }
    };
    const timer = setTimeout(() => { done(); rej(new Error(`no log line for ${what} within ${timeoutMs} ms; log:\n${logs.map((l) => l.msg).join('\n')}\nstderr:\n${stderr.join('')}`)); }, timeoutMs);
    const done = (): void => { clearTimeout(timer); waiters.delete(check); };
    waiters.add(check);
    check();
  });
  return { child, logs, stderr, waitLog, exited };
}

/** Kill with a signal and wait for the exit. */
export async function killDaemon(d: DaemonProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill(signal);
  return d.exited;
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** One HTTP request over a Unix socket or to host:port. */
export function http(target: { socketPath: string } | { host: string; port: number }, method: string, path: string, o: { body?: unknown; headers?: Record<string, string> } = {}): Promise<HttpResult> {
  return new Promise((res, rej) => {
    const body = o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
    const req = request({
      ...target, method, path,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...o.headers },
    }, (r) => {
      let text = '';
      r.on('data', (d: Buffer) => { text += d.toString(); });
      r.on('end', () => {
        let json: unknown;
        try { json = JSON.parse(text); } catch { json = undefined; }
        res({ status: r.statusCode ?? 0, headers: r.headers, text, json });
      });
    });
    req.on('error', rej);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Write a config the way editors save: a new file renamed over the old one. */
export function writeConfig(file: string, config: unknown): void {
  const tmp = `${file}.tmp${process.pid}`;
  writeFileSync(tmp, typeof config === 'string' ? config : stringify(config));
  renameSync(tmp, file);
}
