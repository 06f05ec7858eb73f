import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger } from '../../../src/common/logger.js';

/** The raw lines a logger wrote. */
function capture(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  return { stream, lines };
}

describe('log lines', () => {
  it('are valid JSON without repeated keys, with ISO-8601 times', async () => {
    const { stream, lines } = capture();
    const log = createLogger('info', stream);
    log.child({ svc: 'run' }).child({ worker: 'w1' }).info({ n: 1 }, 'hello');
    await new Promise((r) => setImmediate(r));
    assert.equal(lines.length, 1);
    const line = lines[0]!;
    // JSON.parse keeps the last of repeated keys silently, so count them in the text.
    const keys = [...line.matchAll(/"([^"]+)":/g)].map((m) => m[1]);
    assert.deepEqual(keys, [...new Set(keys)], `repeated keys in ${line}`);
    const rec = JSON.parse(line) as Record<string, unknown>;
    assert.equal(rec.name, 'repr');
    assert.equal(rec.svc, 'run');
    assert.equal(rec.msg, 'hello');
    assert.match(String(rec.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });
});
