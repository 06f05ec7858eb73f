import type { Node, OutputChunk_Stream, RunFinished, RunRequest } from '../proto/repr/run/v1/run.js';
import type { Requirement } from './platform.js';

/** What a run needs from its client, wherever the client is connected (here, or via the scheduler). */
export interface RunHost {
  /** Asks the client what `path` is (with its listing when `list`). */
  query(path: string, list: boolean): Promise<Node>;
  output(stream: OutputChunk_Stream, data: Buffer): void;
  /**
   * Called with the run's answer as soon as it is known, before the executor
   * unmounts and removes the run's directory (tens of milliseconds): a host
   * that can hand the answer on at once does so here, and still holds the
   * executor until run() returns.
   */
  answered?(f: RunFinished): void;
}

/** The platform properties of a run as scheduler requirements. */
export function runRequirements(req: RunRequest): Requirement[] {
  return req.platform.map((p) => ({ name: p.name, value: p.value }));
}
