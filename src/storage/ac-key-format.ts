import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { childStores, type StoreConfig } from './store-config.js';
import type { Logger } from '../common/logger.js';
import { AC_KEY_FORMAT } from './action-cache.js';

/** Written into every disk directory of the action cache; holds AC_KEY_FORMAT. */
export const AC_KEY_FORMAT_FILE = 'ac-key-format';

/**
 * Makes the action cache's disk stores safe to open under the current key
 * format, before they are opened. A directory without the current marker is
 * emptied rather than translated: entries of an earlier format cannot be
 * re-keyed (the old key does not reveal the instance or action it was for),
 * and those of instance "" were stored under whatever digest a client named,
 * so any of them may be a forgery waiting for the new keys. Losing the cache
 * once costs only re-execution. Memory stores start empty and need nothing.
 */
export function prepareActionCacheStores(config: StoreConfig, log: Logger): void {
  if (config.type === 'disk') prepareDirectory(config.directory, log);
  for (const child of childStores(config)) prepareActionCacheStores(child, log);
}

function prepareDirectory(directory: string, log: Logger): void {
  const marker = path.join(directory, AC_KEY_FORMAT_FILE);
  const found = readMarker(marker);
  if (found === String(AC_KEY_FORMAT)) return;
  // The layout DiskBlobStore documents: blobs/ and tmp/. Only those go, in case
  // the directory was pointed at one that holds other things too.
  const blobs = path.join(directory, 'blobs');
  if (existsSync(blobs)) {
    log.warn({ directory, found: found ?? 'none', current: AC_KEY_FORMAT }, 'action cache was written with another key format; clearing it');
  }
  rmSync(blobs, { recursive: true, force: true });
  rmSync(path.join(directory, 'tmp'), { recursive: true, force: true });
  // The marker goes last: a crash before it leaves the directory to be cleared again.
  mkdirSync(directory, { recursive: true });
  const tmp = `${marker}.${process.pid}.tmp`;
  writeFileSync(tmp, `${AC_KEY_FORMAT}\n`);
  renameSync(tmp, marker);
}

function readMarker(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
