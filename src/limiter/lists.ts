/**
 * Management, deny and allow lists: CIDRs as an operator states them -> the entries of the
 * sl_lists LPM trie. The trie answers with the longest prefix that covers a source, so each entry
 * carries the flags of every prefix that covers it (a /32 inside a denied /8 is still denied).
 * The data path then applies management -> deny -> allow, in that order.
 */
import { ListFlags } from '../generated/types';
import { covers, formatPrefix, parsePrefix, type Prefix } from './policy';
import { runSync, ticker, type Steps } from './steps';

export type ListName = 'mgmt' | 'deny' | 'allow';
export const LIST_FLAG: Record<ListName, number> = { mgmt: ListFlags.MGMT, deny: ListFlags.DENY, allow: ListFlags.ALLOW };

export interface Lists {
  mgmt: string[];
  deny: string[];
  allow: string[];
}

export const emptyLists = (): Lists => ({ mgmt: [], deny: [], allow: [] });

export interface ListEntry extends Prefix {
  /** Effective flags: this prefix's and those of every prefix covering it. */
  flags: number;
}

const id = (p: Prefix): string => `${p.family}|${p.addr.toString('hex')}|${p.plen}`;

/** Normalise the CIDRs of each list (throws on the first bad one, naming it and its list). */
export function normaliseLists(lists: Lists): Lists {
  return runSync(normaliseListsSteps(lists));
}

/** normaliseLists in steps (src/limiter/steps.ts): a pause is possible every 2,048 prefixes. */
export function* normaliseListsSteps(lists: Lists): Steps<Lists> {
  const tick = ticker(2048);
  const out = emptyLists();
  for (const name of Object.keys(LIST_FLAG) as ListName[]) {
    const seen = new Set<string>();
    for (const text of lists[name]) {
      let p: Prefix;
      try {
        p = parsePrefix(text);
      } catch (e) {
        throw new Error(`${name} list: ${(e as Error).message}`);
      }
      const s = formatPrefix(p);
      if (!seen.has(s)) out[name].push(s);
      seen.add(s);
      if (tick()) yield;
    }
  }
  return out;
}

/**
 * Whether outer (same family, no longer) contains inner. Both are masked (parsePrefix), so this
 * compares the bytes outer's prefix length spans, without copying either address.
 */
function within(outer: Prefix, inner: Prefix): boolean {
  if (outer.family !== inner.family || outer.plen > inner.plen) return false;
  const whole = outer.plen >> 3;
  for (let i = 0; i < whole; i++) if (outer.addr[i] !== inner.addr[i]) return false;
  const rest = outer.plen & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (inner.addr[whole]! & mask) === outer.addr[whole];
}

/** Work done by the last compileLists call: containment checks made (for the tests: O(n), not O(n^2)). */
export const compileWork = { checks: 0 };

/**
 * The trie's entries for a set of lists, in the order the prefixes first appear (mgmt, deny,
 * allow). O(n log n): sorted by (family, address, prefix length), every prefix that covers an
 * entry comes before it, and those that do are nested; one sweep with a stack of the open
 * enclosing prefixes gives each entry its own flags and those of the innermost prefix around it
 * (which already carry theirs). Each prefix is pushed and popped once.
 */
export function compileLists(lists: Lists): ListEntry[] {
  return runSync(compileListsSteps(lists));
}

/** compileLists in steps (src/limiter/steps.ts): a pause is possible every 2,048 prefixes. */
export function* compileListsSteps(lists: Lists): Steps<ListEntry[]> {
  const tick = ticker(2048);
  const own = new Map<string, ListEntry>();
  for (const name of Object.keys(LIST_FLAG) as ListName[]) {
    for (const text of lists[name]) {
      const p = parsePrefix(text);
      const k = id(p);
      let e = own.get(k);
      if (!e) own.set(k, (e = { ...p, flags: 0 }));
      e.flags |= LIST_FLAG[name];
      if (tick()) yield;
    }
  }
  const all = [...own.values()];
  const order: { e: ListEntry; i: number; sort: string }[] = [];
  for (let i = 0; i < all.length; i++) {
    const e = all[i]!;
    order.push({ e, i, sort: `${e.family}${e.addr.toString('hex')}${String(e.plen).padStart(3, '0')}` });
    if (tick()) yield;
  }
  order.sort((a, b) => (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0));
  yield;
  const flags = new Array<number>(all.length);
  const open: { e: ListEntry; flags: number }[] = [];
  let checks = 0;
  for (const { e, i } of order) {
    while (open.length && (checks++, !within(open[open.length - 1]!.e, e))) open.pop();
    const f = e.flags | (open.length ? open[open.length - 1]!.flags : 0);
    flags[i] = f;
    open.push({ e, flags: f });
    if (tick()) yield;
  }
  compileWork.checks = checks;
  const out: ListEntry[] = [];
  for (let i = 0; i < all.length; i++) {
    out.push({ ...all[i]!, flags: flags[i]! });
    if (tick()) yield;
  }
  return out;
}

/** What the lists compiled to lately, by their text: a change checks, then writes, the same lists (two: a change and its rollback). */
const recent: { text: string; entries: ListEntry[] }[] = [];

/**
 * compileListsSteps, remembered for the last few lists (compileLists is a pure function of them):
 * the size check of a change, its write into the trie and a reconcile of the same lists compile
 * once. The entries are shared: never change them.
 */
export function* compiledListsSteps(lists: Lists): Steps<readonly ListEntry[]> {
  const text = JSON.stringify([lists.mgmt, lists.deny, lists.allow]);
  const hit = recent.find((r) => r.text === text);
  if (hit) return hit.entries;
  const entries = yield* compileListsSteps(lists);
  recent.unshift({ text, entries });
  recent.length = Math.min(recent.length, 2);
  return entries;
}

/**
 * The management prefixes of before that after no longer covers (the sources that would lose
 * their protection from lockout): empty when after keeps or widens every one of them.
 */
export function mgmtDropped(before: string[], after: string[]): string[] {
  const keep = after.map(parsePrefix);
  return before.filter((b) => { const p = parsePrefix(b); return !keep.some((k) => covers(k, p)); });
}

/**
 * List edits made at runtime (`sluice allow|deny|mgmt add|del`), kept apart from the lists of the
 * policy file: `add` holds what was added on top of the file, `del` what was removed from it. A
 * `policy apply` lays them over the new file's lists, so that a block added during an incident
 * survives the next apply of the same file (docs/cli.md, "The runtime layer").
 */
export interface RuntimeLists {
  add: Lists;
  del: Lists;
}

export function emptyRuntime(): RuntimeLists {
  return { add: emptyLists(), del: emptyLists() };
}

export function runtimeIsEmpty(r: RuntimeLists | undefined): boolean {
  return !r || (Object.keys(LIST_FLAG) as ListName[]).every((n) => !r.add[n].length && !r.del[n].length);
}

/** A file's lists with the runtime layer laid over them: (file - del) + add. */
export function layered(file: Lists, r: RuntimeLists | undefined): Lists {
  const f = normaliseLists(file);
  if (!r) return f;
  const out = emptyLists();
  for (const n of Object.keys(LIST_FLAG) as ListName[]) {
    out[n] = [...f[n].filter((c) => !r.del[n].includes(c)), ...r.add[n].filter((c) => !f[n].includes(c))];
  }
  return out;
}

/** The runtime layer after an edit of list `name` (prefixes canonical). */
export function editRuntime(r: RuntimeLists | undefined, name: ListName, verb: 'add' | 'del', cidrs: string[]): RuntimeLists {
  const cur = r ?? emptyRuntime();
  const add = { ...cur.add, [name]: [...cur.add[name]] };
  const del = { ...cur.del, [name]: [...cur.del[name]] };
  for (const c of cidrs) {
    if (verb === 'add') {
      if (del[name].includes(c)) del[name] = del[name].filter((x) => x !== c); // the file's entry is back
      else if (!add[name].includes(c)) add[name].push(c);
    } else if (add[name].includes(c)) {
      add[name] = add[name].filter((x) => x !== c); // a runtime addition withdrawn
    } else if (!del[name].includes(c)) {
      del[name].push(c); // an entry of the file, removed at runtime
    }
  }
  return { add, del };
}

/** A runtime layer as one line: "deny +203.0.113.9/32, mgmt -192.0.2.10/32". */
export function describeRuntime(r: RuntimeLists | undefined): string {
  if (!r) return '';
  const parts: string[] = [];
  for (const n of Object.keys(LIST_FLAG) as ListName[]) {
    for (const c of r.add[n]) parts.push(`${n} +${c}`);
    for (const c of r.del[n]) parts.push(`${n} -${c}`);
  }
  return parts.join(', ');
}
