import os from 'node:os';

/**
 * How `repr` exits, as README's "Exit codes" table says. Scripts and CI read
 * these, so each means one thing across commands.
 */

/** repr could not do what it was asked: a server or worker that cannot start, a server it cannot reach or that refused. */
export const FAILED_EXIT = 1;

/** The command line or a config file is wrong: an unknown flag, a bad value, a config that does not validate. */
export const USAGE_EXIT = 2;

/**
 * `repr run` when repr could not run the command (usage errors included): 1
 * and 2 belong to the command, so repr takes docker run's 125 instead.
 */
export const RUN_FAILED_EXIT = 125;

/**
 * `repr run` interrupted (SIGINT or SIGTERM), whether or not some of its
 * commands finished and were written back: 128 + the signal's number, as a
 * shell reports a command the signal killed (130, 143), so that a script or
 * make stops as it would locally.
 */
export function runInterruptedExit(signal: NodeJS.Signals): number {
  return signalExit(signal)!;
}

/** What a shell reports for a command that `signal` killed: 128 + its number; undefined for a name this system does not know. */
export function signalExit(signal: string): number | undefined {
  const n = os.constants.signals[signal as NodeJS.Signals];
  return n === undefined ? undefined : 128 + n;
}
