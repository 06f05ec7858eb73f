import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { invalidArgument } from '../common/errors.js';
import { parseByteSize } from '../common/units.js';
import { type DialTls, parseTarget } from '../grpc/dial.js';

/** Sizes may be written as numbers of bytes or as strings like "10GiB", "512MB". */
export const byteSize = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const n = parseByteSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${v}" is not a size (e.g. 1048576, "512MiB", "10GiB")` });
    return z.NEVER;
  }
  return n;
});

/** A server to dial, checked and written as grpc://host:port or grpcs://host:port, as `dial` takes it. */
export const grpcTarget = z.string().transform((v, ctx) => {
  try {
    return parseTarget(v);
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
    return z.NEVER;
  }
});

/** How a client dials grpcs:// servers (`DialTls`): PEM files, read when dialling. */
export const clientTls = z
  .object({
    /** CAs the server's certificate must chain to; default Node's bundled roots. */
    caFile: z.string().min(1).optional(),
    /** A client certificate and its key, for servers that require one (mTLS). */
    certFile: z.string().min(1).optional(),
    keyFile: z.string().min(1).optional(),
    /** The name the server's certificate carries, when it is not the host dialled. */
    serverName: z.string().min(1).optional(),
  })
  .strict()
  .refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), {
    message: 'a client certificate needs both certFile and keyFile',
  });

/** The environment variables a client's TLS files fall back to, field by field. */
export const CLIENT_TLS_ENV = { caFile: 'REPR_TLS_CA', certFile: 'REPR_TLS_CERT', keyFile: 'REPR_TLS_KEY' } as const;

/** `given` with each file it lacks taken from the environment; undefined when neither names any. */
export function withTlsEnv(given: DialTls | undefined, env: NodeJS.ProcessEnv = process.env): DialTls | undefined {
  const out: DialTls = { ...given };
  for (const [field, name] of Object.entries(CLIENT_TLS_ENV) as [keyof typeof CLIENT_TLS_ENV, string][]) {
    if (out[field] === undefined && env[name]) out[field] = env[name];
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

export const logLevel = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']);

/** Pretty on a terminal, JSON lines otherwise (auto), or either always. */
export const logFormat = z.enum(['auto', 'json', 'pretty']);

/** Validates and fills in defaults; a failure is one INVALID_ARGUMENT naming every bad field. */
export function parseConfig<S extends z.ZodTypeAny>(schema: S, input: unknown): z.output<S> {
  const parsed = schema.safeParse(input ?? {});
  if (!parsed.success) {
    const msg = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw invalidArgument(`invalid configuration: ${msg}`);
  }
  return parsed.data as z.output<S>;
}

export function loadConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw invalidArgument(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalidArgument(`config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
}
