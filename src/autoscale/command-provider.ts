import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Code, invalidArgument, ReprError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { PoolKey, ProvidedWorker, WorkerProvider } from './autoscale.js';

/** What a worker name may be to go into a command: no option look-alikes, no shell or path syntax. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

/** Output kept of one command for the log; a cloud CLI can be chatty. */
const MAX_LOGGED_BYTES = 8192;

export interface CommandProviderOptions {
  /** The pool's name; its workers must register as `<name>-…`. */
  name: string;
  /**
   * argv of the command that adds workers. `{count}` and `{pool}` are
   * replaced inside any item; an item that is exactly `{names}` becomes one
   * item per new worker name (the command must start workers with those
   * names). Without `{names}` the names are unknown until workers register.
   */
  add: readonly string[];
  /** argv of the command that stops workers; an item that is exactly `{names}` becomes one item per name. */
  remove: readonly string[];
  timeoutMs: number;
  log: Logger;
}

/**
 * Any cloud's workers, through the commands its CLI offers: one to add N
 * workers, one to remove named ones. Commands run without a shell (execFile
 * of an argv array), with a timeout; each name goes in as an argv item of
 * its own, checked first, so a worker cannot name itself into a command.
 * The workers are whatever registers under the pool's name prefix.
 */
export class CommandProvider implements WorkerProvider {
  readonly kind = 'command' as const;

  constructor(private readonly o: CommandProviderOptions) {
    for (const [what, argv] of [
      ['add', o.add],
      ['remove', o.remove],
    ] as const) {
      if (argv.length === 0 || !argv[0]) throw invalidArgument(`autoscale pool ${o.name}: provider.${what} is empty; give the command as an argv array`);
    }
    if (!o.remove.includes('{names}'))
      throw invalidArgument(`autoscale pool ${o.name}: provider.remove has no "{names}" item, so it could not say which workers to stop`);
  }

  /** What was asked for and not removed; the workers themselves are the ones that register. */
  async list(_pool: PoolKey): Promise<ProvidedWorker[]> {
    return [];
  }

  async add(pool: PoolKey, count: number): Promise<ProvidedWorker[]> {
    const names = this.o.add.includes('{names}') ? Array.from({ length: count }, () => `${this.o.name}-${randomBytes(4).toString('hex')}`) : [];
    await this.run('add', this.o.add, { count: String(count), pool: this.o.name }, names);
    // An empty name stands for a worker asked for whose name is known only once it registers.
    return names.length > 0 ? names.map((name) => ({ name, pool })) : Array.from({ length: count }, () => ({ name: '', pool }));
  }

  async remove(_pool: PoolKey, names: readonly string[]): Promise<void> {
    for (const n of names) {
      if (!SAFE_NAME.test(n)) throw invalidArgument(`worker name ${JSON.stringify(n)} is not one a command may be given (letters, digits, . _ -, not first)`);
    }
    if (names.length > 0) await this.run('remove', this.o.remove, { count: String(names.length), pool: this.o.name }, names);
  }

  async close(): Promise<void> {}

  private run(what: string, template: readonly string[], vars: Record<string, string>, names: readonly string[]): Promise<void> {
    const argv = template.flatMap((item) => (item === '{names}' ? [...names] : [item.replace(/\{(count|pool)\}/g, (_m, k: string) => vars[k]!)]));
    const [file, ...args] = argv as [string, ...string[]];
    const started = performance.now();
    return new Promise((resolve, reject) => {
      execFile(file, args, { timeout: this.o.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
        const ms = Math.round(performance.now() - started);
        const output = { stdout: stdout.slice(-MAX_LOGGED_BYTES), stderr: stderr.slice(-MAX_LOGGED_BYTES) };
        if (!err) {
          this.o.log.info({ pool: this.o.name, command: what, argv, ms, ...output }, 'autoscale command finished');
          return resolve();
        }
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
        const why = e.killed
          ? `timed out after ${this.o.timeoutMs / 1000} s (provider.timeoutSeconds)`
          : typeof e.code === 'number'
            ? `exited with code ${e.code}`
            : e.message;
        this.o.log.warn({ pool: this.o.name, command: what, argv, ms, ...output }, `autoscale command failed: ${why}`);
        reject(new ReprError(Code.UNAVAILABLE, `autoscale pool ${this.o.name}: the ${what} command ${file} ${why}`));
      });
    });
  }
}
