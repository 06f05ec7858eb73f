import { randomUUID } from 'node:crypto';

/**
 * Operation names follow REAPI's convention, `{instance_name}/operations/{id}`
 * (`operations/{id}` for instance ""), so that a name says which instance it
 * belongs to: Get, Cancel, Delete and WaitExecution then need no instance
 * field to be scoped, and clients such as Bazel pass the name back unchanged.
 */
const SEGMENT = 'operations';

/** The collection of an instance's operations (what ListOperations takes as `name`). */
export function operationCollection(instanceName: string): string {
  return instanceName === '' ? SEGMENT : `${instanceName}/${SEGMENT}`;
}

/** A fresh, unguessable name for an operation of this instance. */
export function newOperationName(instanceName: string): string {
  return `${operationCollection(instanceName)}/${randomUUID()}`;
}

/**
 * The instance an operation name belongs to, or undefined if it is not an
 * operation name in canonical form. Ids never contain "/", so the last one
 * separates the collection even when an instance name has slashes of its own.
 */
export function instanceOfOperation(name: string): string | undefined {
  const slash = name.lastIndexOf('/');
  if (slash < 0 || slash === name.length - 1) return undefined;
  const collection = name.slice(0, slash);
  const instance = instanceOfCollection(collection);
  return operationCollection(instance) === collection ? instance : undefined;
}

/**
 * The instance a ListOperations collection names. Accepts the REAPI form
 * (`{instance}/operations`), "operations" or "" for instance "", and a bare
 * instance name, which some clients send.
 */
export function instanceOfCollection(collection: string): string {
  if (collection === '' || collection === SEGMENT) return '';
  return collection.endsWith(`/${SEGMENT}`) ? collection.slice(0, -SEGMENT.length - 1) : collection;
}
