import type { Node, OutputChunk_Stream, RunRequest } from '../proto/repr/run/v1/run.js';
import type { Requirement } from './platform.js';

/** What a run needs from its client, wherever the client is connected (here, or via the scheduler). */
export interface RunHost {
  /** Asks the client what `path` is (with its listing when `list`). */
  query(path: string, list: boolean): Promise<Node>;
  output(stream: OutputChunk_Stream, data: Buffer): void;
}

/** The platform properties of a run as scheduler requirements. */
export function runRequirements(req: RunRequest): Requirement[] {
  return req.platform.map((p) => ({ name: p.name, value: p.value }));
}
