import { codeOf, Code } from '../common/errors.js';
import { isConnectFailure, isUnreachable } from '../grpc/connect-failure.js';

/**
 * One line for a call to a repr server that failed, naming what to change
 * when the address is what is wrong. `repr run` and `repr status` find their
 * server the same way (--server, else $REPR_SERVER), so they say the same.
 * `serving` says what the server was asked for, for one that does not serve it.
 */
export function serverFailure(e: unknown, target: string, serving: string): string {
  const details = (e as { details?: unknown }).details;
  if (isUnreachable(e)) return `${details}; start repr server there, or give --server (or $REPR_SERVER) the address of one`;
  // Already names its cause and the flag (--tls-ca, grpcs://, ...).
  if (isConnectFailure(e)) return String(details);
  if (codeOf(e) === Code.UNIMPLEMENTED) {
    return `${target} does not serve ${serving} (a --cache-only repr server, another REAPI server, or not gRPC); give --server (or $REPR_SERVER) the address of a repr server that executes`;
  }
  return typeof details === 'string' && details ? details : (e as Error).message;
}
