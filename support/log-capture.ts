import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../src/common/logger.js';

/** A logger whose JSON lines a test can read back, to check what was logged and how often. */
export function captureLogger(level = 'info'): { log: Logger; records: () => Record<string, unknown>[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { log: createLogger(level, sink), records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}
