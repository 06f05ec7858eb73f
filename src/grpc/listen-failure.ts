import { Code, ReprError } from '../common/errors.js';

// grpc-js reports every failed bind as "No address added out of total N
// resolved errors: [listen EADDRINUSE: address already in use …]"; the
// system error inside is what the user acts on.
const CAUSES: readonly (readonly [RegExp, string])[] = [
  [/EADDRINUSE/, 'the port is in use (another repr server, or another program)'],
  [/EADDRNOTAVAIL/, 'that address is not one of this machine (0.0.0.0 listens on all of them)'],
  [/EACCES/, 'this user may not listen on that port (ports below 1024 need root)'],
  [/Name resolution failed/, 'the host name does not resolve'],
];

/** A server that could not listen on `listen`: one line saying why and naming --listen. */
export function listenFailure(listen: string, err: Error): ReprError {
  const cause = CAUSES.find(([re]) => re.test(err.message))?.[1] ?? err.message;
  return new ReprError(Code.FAILED_PRECONDITION, `cannot listen on ${listen}: ${cause}; pick another address with --listen`, { cause: err });
}
