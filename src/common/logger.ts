import { pino, type Logger as PinoLogger } from 'pino';

/** The logging seam: subsystems take a Logger and make children of it. */
export type Logger = PinoLogger;

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino({ level, base: { svc: 'repr' } }, destination ?? process.stdout);
}

/** For tests and library use: a logger that writes nothing. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
