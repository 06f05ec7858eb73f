import type { PeerCertificate } from 'node:tls';
import {
  type Metadata,
  ResponderBuilder,
  type ServerInterceptingCallInterface,
  ServerInterceptingCall,
  type ServerInterceptor,
  ServerListenerBuilder,
} from '@grpc/grpc-js';
import { Code, ReprError, toReprError } from '../common/errors.js';
import type { CallRecorder } from './call-timing.js';
import type { Logger } from '../common/logger.js';
import type { AccessPolicy, Caller, Permission, Principal } from './access-policy.js';
import { type Authenticator, PRINCIPAL_METADATA_KEY } from './auth.js';

/**
 * What a method needs. `anyOf`: one of these permissions, just an
 * authenticated principal, or nothing at all (`anyone`: credentials are
 * neither asked for nor looked at, and no caller is bound). `instance` reads the instance name a request
 * message names (undefined when it names none); every message that names one
 * is checked, so a stream cannot switch to an instance its caller may not
 * use. `everyInstance`: the permission must hold on every instance (a worker
 * serves all of them; `repr status` shows all of them).
 */
export interface MethodRule {
  anyOf: readonly Permission[] | 'authenticated' | 'anyone';
  instance?: (message: unknown) => string | undefined;
  everyInstance?: boolean;
}

/** Rules by full method path ("/package.Service/Method"). A method not in it is open to nobody. */
export type MethodTable = ReadonlyMap<string, MethodRule>;

/**
 * Callers by the metadata object their handler receives: an in-process
 * object a client cannot forge, unlike a header. grpc-js hands handlers the
 * very Metadata the interceptor forwarded.
 */
const callers = new WeakMap<Metadata, Caller>();

/** The caller the access interceptor authenticated for this call, if it ran. */
export function callerOf(metadata: Metadata | undefined): Caller | undefined {
  return metadata ? callers.get(metadata) : undefined;
}

/** Ties a caller to a call's metadata: the interceptor's job, and a test's when it drives a service by hand. */
export function bindCaller(metadata: Metadata, caller: Caller): void {
  callers.set(metadata, caller);
}

/** The caller of a call, or PERMISSION_DENIED: a handler reached without the interceptor serves nobody. */
export function requireCaller(metadata: Metadata | undefined): Caller {
  const c = callerOf(metadata);
  if (!c) throw new ReprError(Code.PERMISSION_DENIED, 'no authenticated caller for this call');
  return c;
}

/**
 * For a server open to everyone (AccessPolicy's anonymous admin, no
 * authenticator): what the interceptor would do to each call's metadata,
 * without it. The client may not name a principal, no credential reaches a
 * handler, and the one caller is bound so handlers find it.
 */
export function bindOpenCaller(caller: Caller): (metadata: Metadata) => void {
  return (metadata) => {
    metadata.remove('authorization');
    metadata.set(PRINCIPAL_METADATA_KEY, caller.principal.name);
    bindCaller(metadata, caller);
  };
}

export interface AccessInterceptorOptions {
  authenticator: Authenticator;
  policy: AccessPolicy;
  methods: MethodTable;
  log?: Logger;
  /** Told of each call refused here (the handler, which times the rest, never sees it). */
  record?: CallRecorder;
}

const methodName = (path: string) => path.slice(path.lastIndexOf('/') + 1);

const isPromise = <T>(v: T | Promise<T>): v is Promise<T> => typeof (v as { then?: unknown }).then === 'function';

function lacks(principal: Principal, rule: MethodRule, method: string, instance: string | undefined): string {
  const perms = typeof rule.anyOf === 'string' ? 'access' : rule.anyOf.join(' or ');
  const where = instance !== undefined ? `, instance ${JSON.stringify(instance)}` : rule.everyInstance ? ', on every instance' : ', on any instance';
  return `principal ${JSON.stringify(principal.name)} lacks ${perms} (${method}${where})`;
}

/** A client certificate the TLS handshake verified, if there is one. */
function peerCertificate(call: ServerInterceptingCallInterface): PeerCertificate | undefined {
  const cert = call.getAuthContext().sslPeerCertificate;
  return cert && Object.keys(cert).length > 0 ? cert : undefined;
}

/**
 * Authenticates and authorizes every call before its handler exists: grpc-js
 * creates the handler only when metadata reaches the end of the interceptor
 * chain, and reads request messages only when asked, so withholding metadata
 * means no handler runs and no message is read. Authentication may take its
 * time (a key set fetched over HTTP) for the same reason.
 *
 * The method's permission is checked first, for any instance; when the
 * caller holds it only on some instances, the first request message is read
 * here (the same decoded object the handler gets) and its instance checked
 * before the handler sees metadata or message; later messages that name an
 * instance are checked as they pass. A refused call ends with
 * UNAUTHENTICATED or PERMISSION_DENIED and is logged once at warn.
 *
 * A call that passes reaches its handler with the caller bound to its
 * metadata (callerOf), the principal's name under PRINCIPAL_METADATA_KEY,
 * and without the authorization header, so handlers that log metadata
 * cannot leak tokens. A client-sent principal header is always dropped.
 */
export function accessInterceptor(o: AccessInterceptorOptions): ServerInterceptor {
  const { authenticator, policy, methods, log, record } = o;
  return (method, call) => {
    const start = record ? performance.now() : 0;
    const name = methodName(method.path);
    const rule = methods.get(method.path);
    let refused = false;
    let caller: Caller | undefined;
    /** Set while the first message is awaited: metadata is held until it has been checked. */
    let held: { metadata: Metadata; next: (md: Metadata) => void } | undefined;
    /** Whether messages must be looked at: the caller's grant stops at some instances. */
    let checkMessages = false;
    /** While the held metadata and first message are handed on; a half-close arriving meanwhile waits. */
    let releasing = false;
    let pendingHalfClose: (() => void) | undefined;

    const refuse = (code: Code, message: string, fields: Record<string, unknown>) => {
      if (refused) return;
      refused = true;
      held = undefined;
      log?.warn({ method: method.path, peer: call.getPeer(), code: Code[code], ...fields }, `call refused: ${message}`);
      // Sent on the next call, not through this one's responder: the call
      // never reached the handler, so there is nothing to intercept.
      call.sendStatus({ code, details: message });
      record?.(method.path, code, (performance.now() - start) / 1000);
    };
    const denyInstance = (instance: string): boolean => {
      if (!rule || typeof rule.anyOf === 'string' || !caller) return false;
      const c = caller;
      if (rule.anyOf.some((p) => c.may(p, instance))) return false;
      const p = c.principal;
      refuse(Code.PERMISSION_DENIED, lacks(p, rule, name, instance), { principal: p.name, via: p.via, instance });
      return true;
    };
    const instanceOf = (message: unknown): string | undefined => {
      try {
        return rule?.instance?.(message);
      } catch {
        return undefined; // the handler refuses what cannot be read, with the right code
      }
    };

    const admit = (metadata: Metadata, next: (md: Metadata) => void, principal: Principal) => {
      if (!rule) {
        refuse(Code.PERMISSION_DENIED, `method ${method.path} is not open to any permission`, { principal: principal.name, via: principal.via });
        return;
      }
      const c = policy.callerFor(principal);
      caller = c;
      if (typeof rule.anyOf !== 'string') {
        const anyOf = rule.anyOf;
        const granted = rule.everyInstance ? anyOf.some((p) => c.mayEverywhere(p)) : anyOf.some((p) => c.mayAnywhere(p));
        if (!granted) {
          refuse(Code.PERMISSION_DENIED, lacks(principal, rule, name, undefined), { principal: principal.name, via: principal.via });
          return;
        }
      }
      metadata.set(PRINCIPAL_METADATA_KEY, principal.name);
      bindCaller(metadata, c);
      const everywhere = typeof rule.anyOf === 'string' || rule.anyOf.some((p) => c.mayEverywhere(p));
      checkMessages = rule.instance !== undefined && !everywhere;
      if (!checkMessages) {
        next(metadata);
        return;
      }
      // Ask for the first message ourselves; the handler starts once it has passed.
      held = { metadata, next };
      call.startRead();
    };

    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        // Handlers must never see the token, nor a principal the client named itself.
        metadata.remove(PRINCIPAL_METADATA_KEY);
        if (rule?.anyOf === 'anyone') {
          metadata.remove('authorization');
          next(metadata);
          return;
        }
        const certificate = peerCertificate(call);
        const failed = (e: unknown) => {
          const err = toReprError(e);
          if (err.code !== Code.UNAUTHENTICATED && err.code !== Code.PERMISSION_DENIED && err.code !== Code.UNAVAILABLE) {
            log?.error({ err, method: method.path }, 'authenticator failed');
          }
          refuse(err.code === Code.UNAVAILABLE || err.code === Code.PERMISSION_DENIED ? err.code : Code.UNAUTHENTICATED, err.message, {});
        };
        let result: Principal | Promise<Principal>;
        try {
          result = authenticator.authenticate(certificate ? { metadata, certificate } : { metadata });
        } catch (e) {
          failed(e);
          return;
        } finally {
          metadata.remove('authorization');
        }
        if (isPromise(result)) {
          // A failure past authentication is a bug here, not the caller's: logged, and the call refused rather than left hanging.
          result
            .then((p) => admit(metadata, next, p), failed)
            .catch((e: unknown) => {
              log?.error({ err: e, method: method.path }, 'access check failed');
              refuse(Code.INTERNAL, 'access check failed', {});
            });
        } else {
          admit(metadata, next, result);
        }
      })
      .withOnReceiveMessage((message, next) => {
        if (refused) return;
        if (checkMessages) {
          const instance = instanceOf(message);
          if (instance !== undefined && denyInstance(instance)) return;
        }
        if (held) {
          // The first message passed: now the handler may start, and gets it.
          // Starting the handler makes it read on, and a half-close already
          // received would reach it ahead of this message (grpc-js flushes a
          // pending half-close when metadata is forwarded); it waits here.
          const h = held;
          held = undefined;
          releasing = true;
          h.next(h.metadata);
          next(message);
          releasing = false;
          const half = pendingHalfClose;
          pendingHalfClose = undefined;
          half?.();
          return;
        }
        next(message);
      })
      .withOnReceiveHalfClose((next) => {
        if (refused) return;
        if (releasing) {
          pendingHalfClose = next;
          return;
        }
        if (held) {
          // A stream that ended before its first message: nothing to check, the handler sees it empty.
          const h = held;
          held = undefined;
          h.next(h.metadata);
        }
        next();
      })
      .build();
    const responder = new ResponderBuilder().withStart((next) => next(listener)).build();
    return new ServerInterceptingCall(call, responder);
  };
}
