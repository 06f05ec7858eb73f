import type { Timestamp } from '../proto/google/protobuf/timestamp.js';

/** A Date as a protobuf Timestamp. */
export function toTimestamp(d: Date): Timestamp {
  const ms = d.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

/** A protobuf Timestamp or Duration in milliseconds (0 when absent). */
export function toMillis(t: { seconds: number; nanos: number } | undefined): number {
  return t ? t.seconds * 1000 + Math.floor(t.nanos / 1e6) : 0;
}
