import type { DaemonStatus } from './daemon-protocol.js';

/** `repr daemon status` for a person: what it serves, what it did, where its runs went. */
export function formatDaemonStatus(s: DaemonStatus, spec: string, socket: string): string {
  const upS = Math.round((Date.now() - s.startedAt) / 1000);
  const lines = [
    `repr daemon ${s.pid} for ${spec} (socket ${socket}), up ${upS} s, stops after ${s.idleTimeoutMs / 1000} s idle`,
    `  runs: ${s.runs} (${s.running} running, ${s.failed} failed); records of ${s.records} commands`,
    `  files: ${s.queries} asked on demand, ${s.mappedHits} served from mappings; ${s.hashed} hashed; ${s.uploadedBlobs} blobs (${s.uploadedBytes} B) uploaded`,
  ];
  const executors = Object.entries(s.executors).sort(([a], [b]) => (a < b ? -1 : 1));
  if (executors.length > 0) lines.push(`  runs per executor: ${executors.map(([e, n]) => `${e} ${n}`).join(', ')}`);
  return `${lines.join('\n')}\n`;
}
