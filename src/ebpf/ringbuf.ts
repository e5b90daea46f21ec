/**
 * A consumer of a BPF ring buffer map (BPF_MAP_TYPE_RINGBUF). Polls run on a worker thread, so
 * waiting for records never blocks the event loop.
 */
import './dispose';
import type { BpfMap } from './map';
import { MapType } from './constants';
import { native, type RingbufHandle } from './native';
import { ClosedError } from './errors';

export class RingBuffer {
  #h: RingbufHandle | undefined;
  #polling: Promise<Buffer[]> | undefined;

  private constructor(h: RingbufHandle) {
    this.#h = h;
  }

  static open(map: BpfMap): RingBuffer {
    if (map.type !== MapType.RingBuf) throw new TypeError(`map '${map.name}' is not a ring buffer (type ${map.type})`);
    return new RingBuffer(native().ringbufOpen(map.fd));
  }

  /** Wait up to timeoutMs for records; returns those consumed (possibly none). One poll at a time. */
  async poll(timeoutMs = 100, maxRecords = 4096): Promise<Buffer[]> {
    if (!this.#h) throw new ClosedError('ring buffer');
    if (this.#polling) throw new Error('a poll of this ring buffer is already running');
    this.#polling = native().ringbufPoll(this.#h, timeoutMs, maxRecords);
    try {
      return await this.#polling;
    } finally {
      this.#polling = undefined;
    }
  }

  /** Records as they come, until the signal aborts. */
  async *records(signal?: AbortSignal, timeoutMs = 200): AsyncGenerator<Buffer> {
    while (!signal?.aborted) {
      for (const r of await this.poll(timeoutMs)) yield r;
    }
  }

  /** Close after any running poll has finished. */
  async close(): Promise<void> {
    if (this.#polling) await this.#polling.catch(() => undefined);
    if (this.#h) native().ringbufClose(this.#h);
    this.#h = undefined;
  }
}
