import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { computeDigest, SHA256 } from '../src/common/digest.js';
import { ReapiClient } from '../src/reapi/reapi-client.js';
import { makeCertAuthority } from '../support/certs.js';
import { acHits } from './ac-hit.js';
import { withServer } from './server.js';
import { round, summary } from './stats.js';
import type { Benchmark, Metric } from './types.js';

const MiB = 1024 * 1024;

/**
 * What TLS costs: the same ByteStream writes and reads and the same
 * GetActionResult hits against two servers of one run, one plaintext and one
 * serving TLS (RSA 2048 certificate; Node's OpenSSL picks the cipher, AES-GCM
 * here), alternating so that both see the same machine load.
 */
export const tlsCost: Benchmark = {
  name: 'tls',
  description: 'ByteStream write/read and AC hits over TLS vs plaintext, two servers in the same run, alternating',
  async run(ctx) {
    const size = ctx.quick ? 8 * MiB : 128 * MiB;
    const reps = ctx.quick ? 1 : 3;
    const acMs = ctx.quick ? 300 : 3000;
    const certDir = mkdtempSync(path.join(os.tmpdir(), 'repr-bench-ca-'));
    try {
      const ca = makeCertAuthority(certDir);
      const cert = ca.server();
      return await withServer((plain) =>
        withServer(
          async (secure) => {
            const tls = new ReapiClient({ target: `grpcs://${secure.server.address}`, tls: { caFile: ca.cert } });
            try {
              const clients = { plain: plain.client, tls };
              const w = { plain: [] as number[], tls: [] as number[] };
              const r = { plain: [] as number[], tls: [] as number[] };
              const ac = { plain: [] as number[], tls: [] as number[] };
              const data = randomBytes(size);
              for (let i = 0; i < reps; i++) {
                for (const k of i % 2 === 0 ? (['plain', 'tls'] as const) : (['tls', 'plain'] as const)) {
                  data.writeUInt32LE(i, 0); // a new blob per server and rep: an existing one short-circuits the upload
                  data.writeUInt8(k === 'tls' ? 1 : 0, 4);
                  const d = computeDigest(SHA256, data);
                  let t = performance.now();
                  await clients[k].write(d, data);
                  w[k].push(size / MiB / ((performance.now() - t) / 1000));
                  t = performance.now();
                  const back = await clients[k].read(d);
                  r[k].push(size / MiB / ((performance.now() - t) / 1000));
                  if (back.length !== size) throw new Error(`read ${back.length} bytes, expected ${size}`);
                  ac[k].push((await acHits(clients[k], acMs, 64)).rate);
                  ctx.log(`rep ${i + 1} ${k}: write ${round(w[k].at(-1)!)} MiB/s, read ${round(r[k].at(-1)!)} MiB/s, AC hits ${Math.round(ac[k].at(-1)!)}/s`);
                }
              }
              const mk = (name: string, s: { plain: number[]; tls: number[] }, unit: string): Metric => {
                const t = summary(s.tls);
                return { name, value: round(t.median), unit, baseline: round(summary(s.plain).median), spread: [round(t.min), round(t.max)] };
              };
              return [
                mk(`ByteStream write ${size / MiB} MiB over TLS (baseline: plaintext)`, w, 'MiB/s'),
                mk(`ByteStream read ${size / MiB} MiB over TLS (baseline: plaintext)`, r, 'MiB/s'),
                mk('GetActionResult hits, 64 callers, over TLS (baseline: plaintext)', ac, 'req/s'),
              ];
            } finally {
              tls.close();
            }
          },
          ['--tls-cert', cert.cert, '--tls-key', cert.key],
        ),
      );
    } finally {
      rmSync(certDir, { recursive: true, force: true });
    }
  },
};
