import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

let cached: string | undefined | null = null;

/**
 * Why this machine cannot carry out `repr run`s, or undefined if it can: an
 * executor without FUSE still runs actions, it just takes no runs.
 */
export function fuseUnavailable(): string | undefined {
  if (cached !== null) return cached;
  cached = (() => {
    if (!existsSync('/dev/fuse')) return '/dev/fuse is missing (load the fuse module, or give the container --device /dev/fuse)';
    try {
      createRequire(import.meta.url)('fuse-native');
    } catch (e) {
      return `the FUSE library cannot be loaded (Debian: apt-get install -y libfuse2 fuse): ${(e as Error).message.split('\n')[0]}`;
    }
    return undefined;
  })();
  return cached;
}
