import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { computeDigest, SHA256 } from '../src/common/digest.js';
import { withServer } from './server.js';
import { round, summary } from './stats.js';
import type { Benchmark, Metric } from './types.js';

const MiB = 1024 * 1024;

export const byteStream: Benchmark = {
  name: 'bytestream',
  description: 'ByteStream Write then Read of one large blob; baseline: writing/reading the same bytes to a local file',
  async run(ctx) {
    const size = ctx.quick ? 8 * MiB : 256 * MiB;
    const reps = ctx.quick ? 1 : 3;
    const data = randomBytes(size);
    return withServer(async ({ client, dataDir }) => {
      const w: number[] = [];
      const r: number[] = [];
      const fw: number[] = [];
      const fr: number[] = [];
      for (let i = 0; i < reps; i++) {
        data.writeUInt32LE(i, 0); // a new blob each time: an existing one would short-circuit the upload
        const d = computeDigest(SHA256, data);
        let t = performance.now();
        await client.write(d, data);
        w.push(size / MiB / ((performance.now() - t) / 1000));
        t = performance.now();
        const back = await client.read(d);
        r.push(size / MiB / ((performance.now() - t) / 1000));
        if (back.length !== size) throw new Error(`read ${back.length} bytes, expected ${size}`);

        const file = path.join(dataDir, `baseline-${i}`);
        t = performance.now();
        await writeFile(file, data);
        fw.push(size / MiB / ((performance.now() - t) / 1000));
        t = performance.now();
        await readFile(file);
        fr.push(size / MiB / ((performance.now() - t) / 1000));
        await rm(file);
        ctx.log(`rep ${i + 1}: write ${round(w.at(-1)!)} MiB/s, read ${round(r.at(-1)!)} MiB/s (file ${round(fw.at(-1)!)} / ${round(fr.at(-1)!)})`);
      }
      const mk = (name: string, s: number[], base: number[]): Metric => {
        const sm = summary(s);
        return {
          name,
          value: round(sm.median),
          unit: 'MiB/s',
          baseline: round(summary(base).median),
          spread: [round(sm.min), round(sm.max)],
          target: { text: '>= 400 MiB/s', met: sm.median >= 400 },
        };
      };
      return [mk(`write ${size / MiB} MiB`, w, fw), mk(`read ${size / MiB} MiB`, r, fr)];
    });
  },
};
