/**
 * Plugin slots: operator programs that decide the packets of rules naming their slot, reached by
 * tail call from the data path. One program array per hook (an array binds to one program type).
 */
import { Bounds } from '../generated/types';
import { ObjectSpec, ProgramType, type BpfMap, type Program } from '../ebpf';

export type Hook = 'xdp' | 'tc';

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

/**
 * Load program (by name or section) from object and put it into slot of the program array. Returns
 * the loaded program (the array holds its own reference; close it when done).
 */
export async function plugProgram(array: BpfMap, hook: Hook, slot: number, object: string, program: string): Promise<Program> {
  if (!Number.isInteger(slot) || slot < 0 || slot >= Bounds.PLUGIN_SLOTS) throw new RangeError(`plugin slot ${slot} must be from 0 to ${Bounds.PLUGIN_SLOTS - 1}`);
  const spec = ObjectSpec.open(object);
  try {
    const want = spec.programs.find((p) => p.name === program || p.section === program);
    if (!want) throw new Error(`${object} has no program or section "${program}" (it has: ${spec.programs.map((p) => `${p.name} (section ${p.section})`).join(', ')})`);
    const type = hook === 'xdp' ? ProgramType.Xdp : ProgramType.SchedCls;
    if (want.type !== type) throw new Error(`program ${want.name} cannot go into an ${hook} slot: it needs ${hook === 'xdp' ? 'an XDP program (SEC("xdp"))' : 'a tc program (SEC("tc"))'}`);
    for (const p of spec.programs) if (p.name !== want.name) spec.setAutoload(p.name, false);
    const coll = await spec.load();
    const prog = coll.programs.get(want.name)!.clone();
    coll.close();
    try {
      array.update(u32(slot), u32(prog.fd));
    } catch (e) {
      prog.close();
      throw e;
    }
    return prog;
  } finally {
    spec.close();
  }
}

/** Empty a slot; false when it was empty. */
export function unplugProgram(array: BpfMap, slot: number): boolean {
  return array.delete(u32(slot));
}
