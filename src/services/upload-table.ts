import { digestString } from '../common/digest.js';
import { Code, ReprError, resourceExhausted } from '../common/errors.js';
import type { BlobWriter } from '../storage/blob-store.js';
import type { UploadResource } from '../reapi/resource-name.js';
import type { ZstdDecoder } from '../reapi/zstd.js';

export interface UploadLimits {
  /** Uploads in progress at once, live or waiting to be resumed. */
  maxCount: number;
  /** Sum of the declared sizes of uploads in progress: the most their files can grow to. */
  maxBytes: number;
  /** An upload that receives nothing for this long is dropped, whether or not its call is still open. */
  idleMs: number;
}

/** A partly received upload, kept so that a client can resume it. */
export interface Upload {
  readonly name: string;
  readonly resource: UploadResource;
  readonly writer: BlobWriter;
  readonly decoder?: ZstdDecoder;
  /** Bytes received as the client counts them (compressed bytes for compressed uploads). */
  committed: number;
  /** The offset the client started from; offsets of compressed uploads are relative to it. */
  readonly firstOffset: number;
  /** Ends the Write call feeding the upload; undefined while it waits to be resumed. */
  call?: (err: ReprError) => void;
  /** True while bytes are being stored: slow storage is not an idle client. */
  storing: boolean;
  lastUsed: number;
  /** Whether the writer has let go of its descriptor since it last wrote. */
  released: boolean;
}

export type NewUpload = Omit<Upload, 'storing' | 'lastUsed' | 'released' | 'call'>;

/**
 * The uploads in progress, within bounds a client cannot push the server
 * past: a count, a byte total, and an idle expiry.
 *
 * When a new upload does not fit, the idle uploads (no call feeding them)
 * are evicted, least recently used first: they cost their owners a restart
 * at worst, while refusing would let abandoned uploads lock every client out
 * until they expire. Live uploads are never evicted, as that would break a
 * transfer in progress; when only they remain, the new upload is refused
 * with RESOURCE_EXHAUSTED, which clients retry.
 *
 * Bytes are counted by declared size, set aside when an upload starts, so a
 * refusal comes before any byte is stored rather than halfway through.
 */
export class UploadTable {
  private readonly uploads = new Map<string, Upload>();
  private reservedBytes = 0;
  private readonly sweeper: NodeJS.Timeout;
  /** How long a live upload may be quiet before its writer lets go of its descriptor. */
  private readonly quietMs: number;

  constructor(
    private readonly limits: UploadLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.quietMs = Math.min(1000, limits.idleMs / 2);
    this.sweeper = setInterval(() => this.sweep(), Math.max(10, Math.min(250, limits.idleMs / 4)));
    this.sweeper.unref();
  }

  get(name: string): Upload | undefined {
    return this.uploads.get(name);
  }

  get size(): number {
    return this.uploads.size;
  }

  /** Registers a new upload, making room for it or refusing it before its writer exists. */
  add(name: string, resource: UploadResource, create: () => NewUpload): Upload {
    const bytes = resource.digest.sizeBytes;
    const what = `upload of ${digestString(resource.digest)}`;
    if (bytes > this.limits.maxBytes) {
      throw resourceExhausted(
        `${what} needs ${bytes} bytes, more than the ${this.limits.maxBytes} bytes this server allows uploads in progress (uploads.maxBytes)`,
      );
    }
    while (this.uploads.size >= this.limits.maxCount || this.reservedBytes + bytes > this.limits.maxBytes) {
      const idle = this.oldestIdle();
      if (idle) {
        this.drop(idle);
      } else if (this.uploads.size >= this.limits.maxCount) {
        throw resourceExhausted(
          `${what} refused: ${this.uploads.size} uploads in progress, the most this server keeps (uploads.maxCount), and none is idle; retry when one finishes`,
        );
      } else {
        throw resourceExhausted(
          `${what} refused: it needs ${bytes} bytes, and uploads in progress hold ${this.reservedBytes} of the ${this.limits.maxBytes} bytes allowed (uploads.maxBytes), none of them idle; retry when one finishes`,
        );
      }
    }
    const u: Upload = { ...create(), storing: false, lastUsed: this.now(), released: false };
    this.uploads.set(name, u);
    this.reservedBytes += bytes;
    return u;
  }

  private oldestIdle(): Upload | undefined {
    let oldest: Upload | undefined;
    for (const u of this.uploads.values()) {
      if (!u.call && !u.storing && (!oldest || u.lastUsed < oldest.lastUsed)) oldest = u;
    }
    return oldest;
  }

  /** Restarts an upload's idle time: a message arrived, or its bytes were stored. */
  touch(u: Upload): void {
    u.lastUsed = this.now();
  }

  /** Takes an upload out of the table without discarding its bytes (it is being committed). */
  remove(u: Upload): void {
    if (this.uploads.get(u.name) !== u) return;
    this.uploads.delete(u.name);
    this.reservedBytes -= u.resource.digest.sizeBytes;
  }

  /** Takes an upload out of the table and discards its bytes. */
  drop(u: Upload): void {
    this.remove(u);
    void u.writer.abort();
  }

  /**
   * The Write call `call` stops feeding `u`, which then waits for a client
   * to resume it: its descriptor is let go at once, and its idle time runs.
   */
  async detach(u: Upload, call: Upload['call']): Promise<void> {
    if (u.call !== call) return;
    u.call = undefined;
    u.lastUsed = this.now();
    if (this.uploads.get(u.name) === u) await this.release(u);
  }

  private async release(u: Upload): Promise<void> {
    if (u.released) return;
    u.released = true;
    await u.writer.release?.().catch(() => undefined);
  }

  private sweep(): void {
    const now = this.now();
    for (const u of this.uploads.values()) {
      if (u.storing) continue;
      const quiet = now - u.lastUsed;
      if (quiet >= this.limits.idleMs) {
        u.call?.(
          new ReprError(
            Code.DEADLINE_EXCEEDED,
            `upload of ${digestString(u.resource.digest)} received no WriteRequest for ${this.limits.idleMs / 1000} s (uploads.idleSeconds) and was dropped; start it again`,
          ),
        );
        this.drop(u);
      } else if (quiet >= this.quietMs) {
        void this.release(u);
      }
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const u of this.uploads.values()) void u.writer.abort();
    this.uploads.clear();
    this.reservedBytes = 0;
  }
}
