import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { invalidArgument } from '../common/errors.js';
import { parseByteSize } from '../common/units.js';
import { parseTarget } from '../grpc/dial.js';

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

/** A server to dial, checked and written as grpc://host:port, as `dial` takes it. */
export const grpcTarget = z.string().transform((v, ctx) => {
  try {
    return parseTarget(v);
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
    return z.NEVER;
  }
});

export const logLevel = z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']);

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
