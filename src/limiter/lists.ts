/**
 * Management, deny and allow lists: CIDRs as an operator states them -> the entries of the
 * sl_lists LPM trie. The trie answers with the longest prefix that covers a source, so each entry
 * carries the flags of every prefix that covers it (a /32 inside a denied /8 is still denied).
 * The data path then applies management -> deny -> allow, in that order.
 */
import { ListFlags } from '../generated/types';
import { covers, formatPrefix, parsePrefix, type Prefix } from './policy';

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
    }
  }
  return out;
}

/** The trie's entries for a set of lists. */
export function compileLists(lists: Lists): ListEntry[] {
  const own = new Map<string, ListEntry>();
  for (const name of Object.keys(LIST_FLAG) as ListName[]) {
    for (const text of lists[name]) {
      const p = parsePrefix(text);
      const e = own.get(id(p)) ?? { ...p, flags: 0 };
      e.flags |= LIST_FLAG[name];
      own.set(id(p), e);
    }
  }
  const all = [...own.values()];
  return all.map((e) => ({ ...e, flags: all.filter((o) => covers(o, e)).reduce((f, o) => f | o.flags, 0) }));
}
