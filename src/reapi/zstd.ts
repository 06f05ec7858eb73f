import { createRequire } from 'node:module';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { invalidArgument } from '../common/errors.js';

// The package's streaming classes are Node Transforms with no output bound;
// the native binding lets us decode chunk by chunk, synchronously, and stop
// the moment the output exceeds what the digest declared (a zip bomb costs
// us nothing).
const binding = createRequire(import.meta.url)('zstd-napi/binding') as typeof ZstdBinding;
const OUT_CHUNK = binding.dStreamOutSize();

export class ZstdDecoder {
  private readonly dctx = new binding.DCtx();
  private produced = 0;
  private inFrame = false;

  constructor(private readonly maxOutputBytes: number) {}

  /** Decompresses one chunk of input and returns the output it completes. */
  push(input: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let src = input;
    for (;;) {
      const dst = Buffer.allocUnsafe(OUT_CHUNK);
      let ret: number, produced: number, consumed: number;
      try {
        [ret, produced, consumed] = this.dctx.decompressStream(dst, src);
      } catch (e) {
        throw invalidArgument(`invalid zstd data: ${(e as Error).message}`);
      }
      if (produced > 0) {
        this.produced += produced;
        if (this.produced > this.maxOutputBytes) {
          throw invalidArgument(`zstd data decompresses to more than the ${this.maxOutputBytes} bytes the digest declares`);
        }
        out.push(dst.subarray(0, produced));
      }
      src = src.subarray(consumed);
      if (src.length === 0 && (produced < dst.length || ret === 0)) {
        this.inFrame = ret !== 0;
        return out;
      }
    }
  }

  /** Throws if the input stopped in the middle of a frame. */
  finish(): void {
    if (this.inFrame) throw invalidArgument('zstd data ends in the middle of a frame');
  }
}

export function decompressBounded(data: Buffer, maxOutputBytes: number): Buffer {
  const d = new ZstdDecoder(maxOutputBytes);
  const parts = d.push(data);
  d.finish();
  return Buffer.concat(parts);
}

/** Streaming zstd compression for responses (ByteStream Read of compressed-blobs). */
export class ZstdEncoder {
  private readonly cctx = new binding.CCtx();

  constructor(level = 1) {
    this.cctx.setParameter(binding.CParameter.compressionLevel, level);
  }

  push(input: Buffer): Buffer[] {
    return this.run(input, binding.EndDirective.continue);
  }

  end(): Buffer[] {
    return this.run(Buffer.alloc(0), binding.EndDirective.end);
  }

  private run(input: Buffer, op: ZstdBinding.EndDirective): Buffer[] {
    const out: Buffer[] = [];
    let src = input;
    for (;;) {
      const dst = Buffer.allocUnsafe(binding.cStreamOutSize());
      const [ret, produced, consumed] = this.cctx.compressStream2(dst, src, op);
      if (produced > 0) out.push(dst.subarray(0, produced));
      src = src.subarray(consumed);
      const done = op === binding.EndDirective.end ? ret === 0 : src.length === 0;
      if (done) return out;
    }
  }
}

export function compressBuffer(data: Buffer, level = 1): Buffer {
  const e = new ZstdEncoder(level);
  return Buffer.concat([...e.push(data), ...e.end()]);
}
