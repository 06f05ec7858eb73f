import { Code, ReprError } from '../common/errors.js';
import type { Caller } from '../grpc/access-policy.js';
import { instanceOfOperation } from '../scheduler/operation-name.js';
import type { Scheduler } from '../scheduler/scheduler.js';

/**
 * Operations belong to the principals that started or joined them: another
 * principal may not watch, read, cancel or delete one (its action, and the
 * output it streams, may be none of their business) unless it is an admin of
 * the operation's instance. Called once the operation is known to exist, so
 * that NOT_FOUND keeps meaning what it meant.
 */
export async function checkOwner(caller: Caller, scheduler: Scheduler, name: string, method: string): Promise<void> {
  const instance = instanceOfOperation(name) ?? '';
  if (caller.may('admin', instance)) return;
  if ((await scheduler.owners(name)).includes(caller.owner)) return;
  throw new ReprError(
    Code.PERMISSION_DENIED,
    `principal ${JSON.stringify(caller.principal.name)} does not own operation ${JSON.stringify(name)} and lacks admin (${method}, instance ${JSON.stringify(instance)})`,
  );
}

/** Whose operations a List by this caller shows: all for an admin of the instance, else only its own. */
export function listedOwner(caller: Caller, instance: string): string | undefined {
  return caller.may('admin', instance) ? undefined : caller.owner;
}
