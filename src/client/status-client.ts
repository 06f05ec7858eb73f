import { Metadata, type ServiceError } from '@grpc/grpc-js';
import { type Clock, systemClock } from '../common/clock.js';
import { Code, ReprError } from '../common/errors.js';
import { serverFailure } from './server-failure.js';
import { isConnectFailure } from '../grpc/connect-failure.js';
import { type DialOptions, dial } from '../grpc/dial.js';
import { type GetStatusResponse, SchedulerStatusClient } from '../proto/repr/worker/v1/worker.js';

/** Asks a scheduler for its status (SchedulerStatus.GetStatus); a failure keeps the call's code. */
export async function fetchStatus(target: string, timeoutMs = 10_000, dialOptions: DialOptions = {}): Promise<GetStatusResponse> {
  const { address, credentials, options } = dial(target, dialOptions);
  const client = new SchedulerStatusClient(address, credentials, options);
  return new Promise<GetStatusResponse>((resolve, reject) => {
    // grpc-js measures deadlines against the system clock, so an injected one has no say here.
    client.getStatus({}, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      client.close();
      if (!err) return resolve(res);
      reject(new ReprError(err.code, statusFailure(err, target, timeoutMs), { cause: err }));
    });
  });
}

function statusFailure(err: ServiceError, target: string, timeoutMs: number): string {
  if (err.code === Code.DEADLINE_EXCEEDED) return `${target} did not answer within ${timeoutMs / 1000} s (a firewall that drops packets, or a server too busy)`;
  // These name the server and what to change; anything else the server said gets the context.
  if (isConnectFailure(err) || err.code === Code.UNIMPLEMENTED) return serverFailure(err, target, 'the scheduler status');
  return `cannot get the status of ${target}: ${err.details || err.message}`;
}

/** Polls until `ready` holds for the scheduler's status (tests, scripts waiting for workers). */
export async function waitForStatus(
  target: string,
  ready: (s: GetStatusResponse) => boolean,
  timeoutMs = 20_000,
  clock: Clock = systemClock,
  dialOptions: DialOptions = {},
): Promise<GetStatusResponse> {
  const until = clock.now() + timeoutMs;
  for (;;) {
    const s = await fetchStatus(target, 10_000, dialOptions);
    if (ready(s)) return s;
    if (clock.now() > until) throw new Error(`scheduler status not as expected after ${timeoutMs} ms: ${JSON.stringify(s)}`);
    await new Promise<void>((r) => clock.setTimeout(r, 100));
  }
}

function ago(ts: { seconds: number; nanos: number } | undefined, now: number): string {
  if (!ts) return '-';
  const s = (now - (ts.seconds * 1000 + ts.nanos / 1e6)) / 1000;
  return s < 120 ? `${s.toFixed(1)}s ago` : `${Math.round(s / 60)}m ago`;
}

/**
 * The schedulers sharing state, one line each, then the shared queue. The
 * heartbeat is the time each last wrote its figures (workers, executors),
 * so those figures are that old.
 */
function schedulerLines(s: GetStatusResponse, now: number): string[] {
  const lines = [`${'SCHEDULER'.padEnd(22)} ${'HEARTBEAT'.padEnd(11)} ${'WORKERS'.padStart(7)} ${'BUSY/EXEC'.padStart(9)}`];
  for (const p of s.schedulers) {
    const load = `${p.busyExecutors}/${p.executors}`;
    lines.push(
      `${p.address.padEnd(22)} ${ago(p.lastHeartbeat, now).padEnd(11)} ${String(p.workers).padStart(7)} ${load.padStart(9)}${p.self ? '  (this one)' : ''}`,
    );
  }
  lines.push('', `queued (all schedulers) ${s.queued}`);
  return lines;
}

/** Each autoscaled pool: its size against the desired one, then its newest change and newest decision, each with its age and reason. */
function poolLines(s: GetStatusResponse, now: number): string[] {
  const lines = [`${'POOL'.padEnd(16)} ${'PROVIDER'.padEnd(10)} ${'WORKERS/DESIRED'.padStart(15)} ${'STARTING'.padStart(8)} ${'DRAINING'.padStart(8)}`];
  for (const p of s.autoscalePools) {
    const size = `${p.workers}/${p.desired}`;
    lines.push(`${p.name.padEnd(16)} ${p.provider.padEnd(10)} ${size.padStart(15)} ${String(p.starting).padStart(8)} ${String(p.draining).padStart(8)}`);
    if (p.lastChange) lines.push(`    last change ${ago(p.lastChange, now)}: ${p.lastChangeReason}`);
    if (p.decided) lines.push(`    last decision ${ago(p.decided, now)}: ${p.reason}`);
  }
  return lines;
}

/**
 * A human-readable table of a status. A scheduler that shares state starts
 * with every scheduler and the shared queue; what follows is its own.
 */
export function formatStatus(s: GetStatusResponse, now = systemClock.now()): string {
  const shared = s.schedulers.length > 0;
  const totals = `executing ${s.executing}  completed ${s.completed}  requeued ${s.requeued}  stale results ${s.staleResults}`;
  const lines = [
    ...(shared ? [...schedulerLines(s, now), `this scheduler: ${totals}`] : [`queued ${s.queued}  ${totals}`]),
    '',
    `${'WORKER'.padEnd(32)} ${'ADDRESS'.padEnd(22)} ${'PRINCIPAL'.padEnd(16)} ${'EXEC'.padStart(4)} ${'BUSY'.padStart(4)} ${'DONE'.padStart(6)}  ${'HEARTBEAT'.padEnd(11)} PROPERTIES`,
  ];
  for (const w of s.workers) {
    const props = w.properties.map((p) => `${p.name}=${p.value}`).join(',');
    const name = `${w.name}${w.draining ? ' (draining)' : ''}`;
    lines.push(
      `${name.padEnd(32)} ${w.address.padEnd(22)} ${(w.principal || '-').padEnd(16)} ${String(w.executors).padStart(4)} ${String(w.running.length).padStart(4)} ${String(w.completed).padStart(6)}  ${ago(w.lastHeartbeat, now).padEnd(11)} ${props}`,
    );
    for (const r of w.running) lines.push(`    ${r.operationName} ${r.actionDigest?.hash.slice(0, 16) ?? ''}… started ${ago(r.started, now)}`);
  }
  if (s.workers.length === 0) lines.push('(no workers connected)');
  if (s.autoscalePools.length > 0) lines.push('', ...poolLines(s, now));
  return `${lines.join('\n')}\n`;
}
