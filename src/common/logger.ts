import { pino, type Logger as PinoLogger } from 'pino';

/** The logging seam: subsystems take a Logger and make children of it. */
export type Logger = PinoLogger;

/** JSON lines for machines, one readable line per event for people, or whichever suits where the lines go. */
export type LogFormat = 'json' | 'pretty' | 'auto';

const options = (level: string) => ({ level, base: { name: 'repr' }, timestamp: pino.stdTimeFunctions.isoTime });

/**
 * JSON lines with ISO-8601 times. The program is named under `name`, so the
 * `svc` of a subsystem's child logger is the only `svc` on a line: a repeated
 * key is invalid JSON to strict parsers.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(options(level), destination ?? process.stdout);
}

/**
 * A logger in the given format; `auto` is pretty when the destination is a
 * terminal and JSON otherwise (a pipe, a file, a log collector). The
 * prettifier is loaded only then: it costs ~40 ms of start-up that servers
 * under a supervisor never need.
 */
export async function createLoggerFor(level: string, format: LogFormat, destination: NodeJS.WritableStream = process.stdout): Promise<Logger> {
  const tty = (destination as { isTTY?: boolean }).isTTY === true;
  if (format === 'json' || (format === 'auto' && !tty)) return createLogger(level, destination);
  const { default: pretty } = await import('pino-pretty');
  const stream = pretty({
    destination,
    colorize: tty,
    // The date is in every line of a long-running server's terminal anyway; the time is what is read.
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname,name',
    singleLine: true,
    sync: true,
  });
  return pino(options(level), stream);
}

/** For tests and library use: a logger that writes nothing. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
