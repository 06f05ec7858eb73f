import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatStatus } from '../../../src/client/status-client.js';
import { toTimestamp } from '../../../src/common/time.js';
import type { AutoscalePoolStatus, GetStatusResponse, SchedulerPeerStatus } from '../../../src/proto/repr/worker/v1/worker.js';

const NOW = Date.parse('2025-01-02T10:00:00Z');

function status(schedulers: SchedulerPeerStatus[], autoscalePools: AutoscalePoolStatus[] = []): GetStatusResponse {
  return {
    workers: [
      {
        name: 'w1',
        address: '10.0.0.7:41000',
        principal: '',
        executors: 4,
        properties: [{ name: 'OSFamily', value: 'linux' }],
        draining: false,
        connected: toTimestamp(new Date(NOW - 60_000)),
        lastHeartbeat: toTimestamp(new Date(NOW - 1500)),
        running: [],
        completed: 9,
      },
    ],
    queued: 12,
    executing: 3,
    completed: 40,
    requeued: 1,
    staleResults: 0,
    schedulers,
    autoscalePools,
  };
}

function peer(address: string, heartbeatAgoMs: number, busy: number, executors: number, self = false): SchedulerPeerStatus {
  return {
    id: `id-${address}`,
    address,
    started: toTimestamp(new Date(NOW - 3_600_000)),
    lastHeartbeat: toTimestamp(new Date(NOW - heartbeatAgoMs)),
    workers: 2,
    executors,
    busyExecutors: busy,
    self,
  };
}

describe('formatStatus', () => {
  it('prints a lone scheduler as before: its queue and totals on one line, then its workers', () => {
    const text = formatStatus(status([]), NOW);
    const lines = text.split('\n');
    assert.equal(lines[0], 'queued 12  executing 3  completed 40  requeued 1  stale results 0');
    assert.equal(lines[1], '');
    assert.match(lines[2]!, /^WORKER +ADDRESS +PRINCIPAL +EXEC +BUSY +DONE +HEARTBEAT +PROPERTIES$/);
    assert.match(lines[3]!, /^w1 +10\.0\.0\.7:41000 +- +4 +0 +9 {2}1\.5s ago +OSFamily=linux$/);
    assert.doesNotMatch(text, /SCHEDULER|all schedulers|this one/);
  });

  it('prints schedulers sharing state, the shared queue, then this scheduler: its totals and workers', () => {
    const text = formatStatus(status([peer('10.0.0.1:8980', 400, 3, 16, true), peer('10.0.0.2:8980', 150_000, 0, 8)]), NOW);
    assert.equal(
      text.split('\n').slice(0, 7).join('\n'),
      [
        'SCHEDULER              HEARTBEAT   WORKERS BUSY/EXEC',
        '10.0.0.1:8980          0.4s ago          2      3/16  (this one)',
        '10.0.0.2:8980          3m ago            2       0/8',
        '',
        'queued (all schedulers) 12',
        'this scheduler: executing 3  completed 40  requeued 1  stale results 0',
        '',
      ].join('\n'),
    );
    assert.match(text, /^w1 +10\.0\.0\.7:41000 /m);
  });

  it('prints each autoscaled pool: workers against desired, its last change and last decision with their ages and reasons', () => {
    const pool: AutoscalePoolStatus = {
      name: 'small',
      provider: 'process',
      workers: 2,
      desired: 4,
      starting: 2,
      draining: 0,
      direction: 'hold',
      reason: 'hold: scale-up cooldown, 1 s of 30 s (29 s left)',
      decided: toTimestamp(new Date(NOW - 1000)),
      lastChangeDirection: 'up',
      lastChangeReason: 'up 2→4: utilization 3.00 > 0.75',
      lastChange: toTimestamp(new Date(NOW - 2000)),
    };
    const lines = formatStatus(status([], [pool]), NOW)
      .trimEnd()
      .split('\n');
    assert.deepEqual(lines.slice(-4), [
      'POOL             PROVIDER   WORKERS/DESIRED STARTING DRAINING',
      'small            process                2/4        2        0',
      '    last change 2.0s ago: up 2→4: utilization 3.00 > 0.75',
      '    last decision 1.0s ago: hold: scale-up cooldown, 1 s of 30 s (29 s left)',
    ]);
    assert.doesNotMatch(formatStatus(status([]), NOW), /POOL/, 'no pool table without an autoscaler');
  });
});
