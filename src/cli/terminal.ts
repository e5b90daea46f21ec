/**
 * Output for people on a terminal, and for programs everywhere else: `--watch` redraws in place
 * with colour and sparklines only when stdout is a terminal; piped, it prints plain blocks (no
 * escape sequences), and `--json` one object per line. NO_COLOR (no-color.org) turns colour off.
 */

const BARS = '▁▂▃▄▅▆▇█';

export interface Screen {
  /** stdout is a terminal: redraw in place, colour. */
  readonly tty: boolean;
  readonly colour: boolean;
  /** Show a frame: in place on a terminal, appended as a block otherwise. */
  frame(text: string): void;
  paint(s: string, c: 'red' | 'green' | 'yellow' | 'dim' | 'bold'): string;
}

const CODES = { red: 31, green: 32, yellow: 33, dim: 2, bold: 1 } as const;

export function screen(out: NodeJS.WriteStream = process.stdout): Screen {
  const tty = !!out.isTTY;
  const colour = tty && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb';
  let first = true;
  return {
    tty,
    colour,
    frame(text: string): void {
      if (tty) out.write(`\x1b[H\x1b[2J${text}\n`);
      else out.write(`${first ? '' : '\n'}${text}\n`);
      first = false;
    },
    paint: (s, c) => (colour ? `\x1b[${CODES[c]}m${s}\x1b[0m` : s),
  };
}

/** A sparkline of the values, scaled to their maximum (all zero: the lowest bar). */
export function sparkline(values: readonly number[]): string {
  const max = Math.max(0, ...values);
  return values.map((v) => BARS[max > 0 ? Math.min(BARS.length - 1, Math.round((v / max) * (BARS.length - 1))) : 0]).join('');
}

/** Samples of the last `spanMs`, oldest first. */
export class History {
  private readonly points: { at: number; v: number }[] = [];
  constructor(private readonly spanMs = 60_000) {}
  add(v: number, at = Date.now()): void {
    this.points.push({ at, v });
    while (this.points.length && this.points[0]!.at < at - this.spanMs) this.points.shift();
  }
  values(): number[] {
    return this.points.map((p) => p.v);
  }
}

/**
 * A closed pipe (`sluice stats --watch --json | head`) ends the command quietly with exit code 0,
 * as `yes | head` does, instead of an unhandled EPIPE and its stack.
 */
export function quietOnClosedPipe(): void {
  for (const s of [process.stdout, process.stderr]) {
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(0);
      throw e;
    });
  }
}

/**
 * Progress of a long operation on stderr, for a person at a terminal: "reading policy.yaml… 12
 * rules, 100,000 prefixes (1.8 s)". Silent when stderr is not a terminal (logs and scripts get
 * the result lines only).
 */
export class Progress {
  private t0 = 0;
  private open = false;
  constructor(private readonly out: NodeJS.WriteStream = process.stderr, readonly on = !!out.isTTY) {}

  start(what: string): void {
    if (!this.on) return;
    this.end();
    this.t0 = Date.now();
    this.open = true;
    this.out.write(`${what}…`);
  }

  /** A running count on the same line ("… 4,000 of 10,000"). */
  update(text: string): void {
    if (this.on && this.open) this.out.write(`\x1b[s ${text}\x1b[K\x1b[u`);
  }

  end(detail?: string): void {
    if (!this.on || !this.open) return;
    this.open = false;
    this.out.write(`\x1b[K ${detail ? `${detail} ` : ''}(${((Date.now() - this.t0) / 1000).toFixed(1)} s)\n`);
  }
}

/** "12 rules, 100,000 list prefixes, GeoIP 3 tiers": what a policy file holds, for Progress. */
export function policySize(pf: { rules: readonly unknown[]; lists: { mgmt: readonly string[]; deny: readonly string[]; allow: readonly string[] }; geoip?: { tiers: Record<string, string[]> } | null }): string {
  const prefixes = pf.lists.mgmt.length + pf.lists.deny.length + pf.lists.allow.length;
  const geo = pf.geoip ? `, GeoIP ${Object.keys(pf.geoip.tiers).length} tiers` : '';
  // The default rule is not in the file's list, but counts (as `policy apply` counts it).
  return `${pf.rules.length + 1} rules, ${prefixes.toLocaleString('en-US')} list prefixes${geo}`;
}
