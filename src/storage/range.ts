import { invalidArgument, outOfRange } from '../common/errors.js';

/**
 * Turns a read's offset/limit into [start, end) over a blob of `size` bytes,
 * with ByteStream's rules: a negative value is invalid, an offset past the end
 * is OUT_OF_RANGE, and a limit of 0 means "to the end".
 */
export function resolveRange(size: number, offset = 0, limit = 0): { start: number; end: number } {
  if (offset < 0) throw invalidArgument(`read offset ${offset} is negative`);
  if (limit < 0) throw invalidArgument(`read limit ${limit} is negative`);
  if (offset > size) throw outOfRange(`read offset ${offset} is past the end of a ${size}-byte blob`);
  const end = limit === 0 ? size : Math.min(size, offset + limit);
  return { start: offset, end };
}
