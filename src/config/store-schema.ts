import path from 'node:path';
import { z } from 'zod';
import { someStore, type StoreConfig } from '../storage/store-config.js';
import { type DialTls, isTlsTarget, parseTarget } from '../grpc/dial.js';
import { postgresUrlProblem, TABLE_NAME } from '../storage/postgres-url.js';
import { byteSize, clientTls, grpcTarget } from './schema.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

// A tree of stores: backends at the leaves, decorators wrapping them.
export const storeSchema: z.ZodType<StoreConfig, z.ZodTypeDef, unknown> = z.lazy(() =>
  z
    .discriminatedUnion('type', [
      z.object({ type: z.literal('memory'), limitBytes: byteSize.default(256 * MiB) }).strict(),
      z.object({ type: z.literal('disk'), directory: z.string().min(1), limitBytes: byteSize.default(10 * GiB), fsync: z.boolean().default(false) }).strict(),
      z
        .object({
          type: z.literal('read-caching'),
          fast: storeSchema,
          slow: storeSchema,
          maxBlobBytes: byteSize.default(16 * MiB),
          findMissing: z.enum(['slow', 'fast-first']).default('slow'),
        })
        .strict(),
      z.object({ type: z.literal('verifying'), backend: storeSchema }).strict(),
      // Another REAPI server's CAS: a scheduler and its workers can share one
      // CAS that runs elsewhere.
      z.object({ type: z.literal('remote'), target: grpcTarget, instanceName: z.string().default(''), tls: clientTls.optional() }).strict(),
      // An action cache that every server using this database shares.
      z
        .object({
          type: z.literal('postgres'),
          url: z.string().superRefine((url, ctx) => {
            const problem = postgresUrlProblem(url);
            if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
          }),
          table: z.string().regex(TABLE_NAME, 'must be a plain lower-case identifier (letters, digits, _; at most 63)').optional(),
        })
        .strict(),
    ])
    .superRefine((s, ctx) => {
      if (s.type === 'remote' && s.tls && !isTlsTarget(s.target)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['tls'], message: `TLS settings for ${s.target}, which is plaintext; use grpcs://` });
      }
    }),
);

/**
 * The CAS a server keeps under `dataDir` unless configured: hot small blobs
 * in memory over an LRU disk store, every write verified against its digest.
 */
export function defaultCasStore(dataDir: string): StoreConfig {
  return {
    type: 'verifying',
    backend: {
      type: 'read-caching',
      maxBlobBytes: 16 * MiB,
      findMissing: 'slow',
      fast: { type: 'memory', limitBytes: 256 * MiB },
      slow: { type: 'disk', directory: path.join(dataDir, 'cas'), limitBytes: 10 * GiB, fsync: false },
    },
  };
}

/**
 * A CAS that lives on another REAPI server (`repr server --cas`), as several
 * schedulers share one CAS node. Small blobs are kept in memory as they are
 * read: every Execute reads its Action and Command, a build reads the same
 * few many times, and each read would otherwise be a round trip to the node.
 * Content never changes under its digest, so a cached copy is never stale;
 * FindMissing still asks the node alone, so a blob it has evicted is
 * uploaded again rather than reported present because this cache holds it.
 */
export function remoteCasStore(target: string, tls?: DialTls): StoreConfig {
  return verifiedCas({
    type: 'read-caching',
    maxBlobBytes: 1 * MiB,
    findMissing: 'slow',
    fast: { type: 'memory', limitBytes: 64 * MiB },
    slow: { type: 'remote', target: parseTarget(target), instanceName: '', ...(tls ? { tls } : {}) },
  });
}

export function defaultAcStore(dataDir: string): StoreConfig {
  return {
    type: 'read-caching',
    maxBlobBytes: 1 * MiB,
    findMissing: 'slow',
    fast: { type: 'memory', limitBytes: 64 * MiB },
    slow: { type: 'disk', directory: path.join(dataDir, 'ac'), limitBytes: 1 * GiB, fsync: false },
  };
}

/**
 * A CAS is always verified: a tree that does not say so at its root is
 * wrapped, so that a config written before `verifying` was a node keeps
 * the protection it had, and a forgotten node cannot turn it off.
 */
export function verifiedCas(config: StoreConfig): StoreConfig {
  return config.type === 'verifying' ? config : { type: 'verifying', backend: config };
}

/** Why a tree cannot hold the CAS, or undefined if it can. */
export function casProblem(config: StoreConfig): string | undefined {
  if (someStore(config, (s) => s.type === 'postgres')) {
    return 'a postgres store keeps each blob in one row, sent whole, and refuses large ones: it is for small action results; use disk, or remote (--cas) for a CAS shared by several servers';
  }
  return undefined;
}

/** Why a tree cannot hold the action cache, or undefined if it can. */
export function actionCacheProblem(config: StoreConfig): string | undefined {
  if (someStore(config, (s) => s.type === 'remote')) {
    return 'a remote store is a CAS, and action-cache entries are not content-addressed; keep the action cache local';
  }
  if (someStore(config, (s) => s.type === 'verifying')) {
    return 'action-cache entries are keyed by action digest, not by the hash of their bytes, so a verifying store would refuse every one; remove it';
  }
  return undefined;
}

/** The disk store at the bottom of a tree (the slow end of every read cache), if there is one. */
export function bottomDisk(config: StoreConfig): Extract<StoreConfig, { type: 'disk' }> | undefined {
  switch (config.type) {
    case 'disk':
      return config;
    case 'read-caching':
      return bottomDisk(config.slow);
    case 'verifying':
      return bottomDisk(config.backend);
    case 'memory':
    case 'remote':
    case 'postgres':
      return undefined;
  }
}

/** The same tree with the bottom disk store's limit replaced (`--cas-size`). */
export function withBottomDiskLimit(config: StoreConfig, limitBytes: number): StoreConfig {
  switch (config.type) {
    case 'disk':
      return { ...config, limitBytes };
    case 'read-caching':
      return { ...config, slow: withBottomDiskLimit(config.slow, limitBytes) };
    case 'verifying':
      return { ...config, backend: withBottomDiskLimit(config.backend, limitBytes) };
    case 'memory':
    case 'remote':
    case 'postgres':
      return config;
  }
}
