import { randomUUID } from 'node:crypto';
import type { ClientDuplexStream } from '@grpc/grpc-js';
import { type Clock, systemClock } from '../common/clock.js';
import type { DigestFunction } from '../common/digest.js';
import { Code, ReprError } from '../common/errors.js';
import { dial, type DialOptions } from '../grpc/dial.js';
import { type ClientMessage, type OutputChunk_Stream, type PathNode, type RunFinished, RunnerClient, type ServerMessage } from '../proto/repr/run/v1/run.js';
import type { FileSource } from './file-source.js';

export interface RunSpec {
  argv: string[];
  env: { name: string; value: string }[];
  cwd: string;
  roots: string[];
  mappings?: PathNode[];
  platform?: { name: string; value: string }[];
  timeoutMs?: number;
  onOutput?: (stream: OutputChunk_Stream, data: Buffer) => void;
  onStarted?: (executor: string) => void;
  /** Aborting it asks the server to stop this run alone. */
  signal?: AbortSignal;
}

interface Pending {
  spec: RunSpec;
  resolve(f: RunFinished): void;
  reject(e: Error): void;
}

type Call = ClientDuplexStream<ClientMessage, ServerMessage>;

/**
 * One connection to a repr server's Runner: one bidirectional stream that
 * carries any number of runs at once. The server's questions about files are
 * answered from the local disk by the shared FileSource, so a file asked for
 * by several runs (on several workers) is uploaded once.
 */
export class RunSession {
  private readonly client: InstanceType<typeof RunnerClient>;
  private readonly call: Call;
  private readonly runs = new Map<string, Pending>();
  private broken?: Error;

  constructor(
    readonly target: string,
    private readonly files: FileSource,
    private readonly o: { instanceName: string; fn: DigestFunction; clock?: Clock } & DialOptions,
  ) {
    const { address, credentials, options } = dial(target, { keepaliveMs: 20_000, ...o });
    this.client = new RunnerClient(address, credentials, options);
    this.call = this.client.session();
    this.call.on('data', (m: ServerMessage) => this.onMessage(m));
    const fail = (e: Error) => {
      this.broken ??= e;
      for (const r of this.runs.values()) r.reject(e);
      this.runs.clear();
    };
    this.call.on('error', (e: Error) => fail(e));
    this.call.on('end', () => fail(new ReprError(Code.UNAVAILABLE, `server ${target} ended the session`)));
  }

  /** Why the stream broke, once it has: a long-lived owner replaces the session then. */
  get failure(): Error | undefined {
    return this.broken;
  }

  /** Runs a command; resolves when it has finished on the server (changes not yet applied). */
  run(spec: RunSpec): Promise<RunFinished> {
    if (this.broken) return Promise.reject(this.broken);
    const runId = randomUUID();
    return new Promise<RunFinished>((resolve, reject) => {
      this.runs.set(runId, { spec, resolve, reject });
      spec.signal?.addEventListener('abort', () => this.runs.has(runId) && this.send({ cancel: { runId } }), { once: true });
      this.call.write({
        run: {
          runId,
          arguments: spec.argv,
          environmentVariables: spec.env,
          workingDirectory: spec.cwd,
          roots: spec.roots,
          mappings: spec.mappings ?? [],
          instanceName: this.o.instanceName,
          digestFunction: this.o.fn.value,
          platform: spec.platform ?? [],
          timeoutMs: spec.timeoutMs ?? 0,
        },
      });
    });
  }

  /** Asks the server to stop every run of this session. */
  cancelAll(): void {
    for (const runId of this.runs.keys()) this.call.write({ cancel: { runId } });
  }

  private onMessage(m: ServerMessage): void {
    if (m.query) {
      const q = m.query;
      const run = this.runs.get(q.runId);
      if (!run) return;
      this.files.answer(q.path, q.list, run.spec.roots).then(
        (node) => this.send({ reply: { runId: q.runId, queryId: q.queryId, node, error: undefined } }),
        (e: unknown) => {
          const code = e instanceof ReprError ? e.code : Code.INTERNAL;
          this.send({ reply: { runId: q.runId, queryId: q.queryId, node: undefined, error: { code, message: (e as Error).message, details: [] } } });
        },
      );
    } else if (m.output) {
      this.runs.get(m.output.runId)?.spec.onOutput?.(m.output.stream, Buffer.from(m.output.data));
    } else if (m.started) {
      this.runs.get(m.started.runId)?.spec.onStarted?.(m.started.executor);
    } else if (m.finished) {
      const run = this.runs.get(m.finished.runId);
      this.runs.delete(m.finished.runId);
      run?.resolve(m.finished);
    }
  }

  private send(m: ClientMessage): void {
    if (this.broken) return;
    try {
      this.call.write(m);
    } catch {
      /* the stream is gone; its error handler fails the runs */
    }
  }

  /** Half-closes the stream (the server ends it after the last run) and closes the channel. */
  async close(): Promise<void> {
    if (!this.broken) {
      await new Promise<void>((resolve) => {
        const cancel = (this.o.clock ?? systemClock).setTimeout(resolve, 2000);
        this.call.once('status', () => (cancel(), resolve()));
        this.call.once('error', () => (cancel(), resolve()));
        this.call.end();
      });
    }
    this.client.close();
  }
}
