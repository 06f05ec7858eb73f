import { invalidArgument } from '../common/errors.js';

/**
 * Which instance names the server answers for. REAPI leaves their meaning to
 * the server; repr treats them as namespaces of the action cache (and, later,
 * of execution), while the CAS is shared: content addressing makes sharing
 * blobs between instances safe and saves uploads.
 */
export class InstanceNames {
  private readonly allowed: ReadonlySet<string> | undefined;

  constructor(names: readonly string[]) {
    this.allowed = names.length > 0 ? new Set(names) : undefined;
  }

  check(name: string): string {
    if (this.allowed && !this.allowed.has(name)) {
      throw invalidArgument(`unknown instance name "${name}"; this server serves: ${[...this.allowed].map((n) => `"${n}"`).join(', ')}`);
    }
    return name;
  }
}
