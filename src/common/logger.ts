import { pino, type Logger as PinoLogger } from 'pino';

/** The logging seam: subsystems take a Logger and make children of it. */
export type Logger = PinoLogger;

/**
 * JSON lines with ISO-8601 times. The program is named under `name`, so the
 * `svc` of a subsystem's child logger is the only `svc` on a line: a repeated
 * key is invalid JSON to strict parsers.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino({ level, base: { name: 'repr' }, timestamp: pino.stdTimeFunctions.isoTime }, destination ?? process.stdout);
}

/** For tests and library use: a logger that writes nothing. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
