import type { Request } from 'express';
import { Store, type SessionData } from 'express-session';
import { HttpError } from '../errors';
import { markLoaded, wasLoaded, type ExpiryRule } from '../session';
import {
  activeSession,
  byLastSeen,
  isOwned,
  sessionEvent,
  type ActiveSession,
  type Audit,
  type EndReason,
  type OwnedSession,
  type SessionIndex,
} from './types';

export interface MemoryStoreOptions {
  /** most live sessions held at once */
  max: number;
  /** when a session is gone: the same rule the app enforces */
  expiresAt: ExpiryRule;
  /** how often expired sessions are swept out */
  pruneIntervalMs: number;
  /** most sessions one user holds: a login past it ends that user's least recently seen */
  maxPerUser: number;
  /** told of every session that starts or ends */
  audit?: Audit;
}

/** the store is full of live sessions: a new login must wait for some to expire */
export class StoreFullError extends HttpError {
  constructor(retryAfterSeconds: number) {
    super(503, 'Too many active sessions, try again later', { 'Retry-After': String(retryAfterSeconds) });
    this.name = 'StoreFullError';
  }
}

interface Entry {
  json: string;
  expiresAt: number;
  /** whose session it is, when a login made it */
  owner: Owner | undefined;
}

interface Owner {
  user: string;
  handle: string;
  lastSeenAt: number;
}

type Callback = (err?: unknown) => void;

// a full store scans all its sessions at most this often: when sessions expire one after another (a store
// filled by a steady stream of logins, one idle timeout later), a scan per expiry would be one per login
const MIN_FULL_SWEEP_INTERVAL_MS = 1000;

type GetCallback = (err: unknown, session?: SessionData | null) => void;

/**
 * express-session's MemoryStore keeps every session nobody reads again and grows without bound; this one
 * sweeps expired sessions on a timer, holds at most `max` live ones (counted by Map.size, O(1)), and refuses
 * new sessions rather than evict live ones. Sessions are kept as JSON so nobody shares an object with it.
 * Callbacks run synchronously: there is no I/O, and express-session then writes each response in one piece.
 *
 * The Map is kept in the order sessions were last written (a save moves its session to the end), which is the
 * order they expire in while the idle timeout ends them: a full store frees room by dropping expired sessions
 * from the front, O(1) per session dropped, and scans the rest only when that finds nothing, once a second at most.
 */
export class BoundedMemoryStore extends Store implements SessionIndex {
  private readonly sessions = new Map<string, Entry>();
  // the per-user index: user name -> that user's session IDs (an array: lighter than a Map for the few sessions a
  // user holds), changed only with `sessions`, so the two always agree
  private readonly users = new Map<string, string[]>();
  private readonly timer: NodeJS.Timeout;
  // no held session expires before this (a lower bound: removals only make it earlier than the truth), so a
  // full store is scanned only when a scan can free something
  private nextExpiryAt = Number.POSITIVE_INFINITY;
  // when a login last made a full store scan (the timer's sweeps do not count: they come once an interval)
  private lastFullSweepAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly options: MemoryStoreOptions) {
    super();
    this.timer = setInterval(() => this.prune(), options.pruneIntervalMs);
    // never keep the process alive for a sweep
    this.timer.unref();
  }

  /** sessions held now, expired ones not yet swept included: O(1) */
  get size(): number {
    return this.sessions.size;
  }

  /** most live sessions held at once */
  get capacity(): number {
    return this.options.max;
  }

  override get(sid: string, callback: GetCallback): void {
    const entry = this.live(sid);
    if (!entry) {
      callback(null, null);
      return;
    }
    // express-session turns the cookie's expiry back into a Date
    callback(null, JSON.parse(entry.json) as SessionData);
  }

  override set(sid: string, sess: SessionData, callback?: Callback): void {
    const expiresAt = this.options.expiresAt(sess);
    if (expiresAt <= Date.now()) {
      this.drop(sid, 'timeout');
      callback?.();
      return;
    }
    const held = this.sessions.has(sid);
    // a session loaded before it was ended (a logout came first) is dropped, never written back
    if (!held && wasLoaded(sess)) {
      callback?.();
      return;
    }
    if (!held && this.isFull()) {
      const retryAfterMs = this.nextExpiryAt - Date.now();
      callback?.(new StoreFullError(Number.isFinite(retryAfterMs) ? Math.max(1, Math.ceil(retryAfterMs / 1000)) : 60));
      return;
    }
    const owner = isOwned(sess) ? { user: sess.user.name, handle: sess.handle, lastSeenAt: sess.cookieRenewedAt ?? sess.loginAt } : undefined;
    // to the end of the Map: the front holds the sessions written longest ago
    if (held) this.sessions.delete(sid);
    this.sessions.set(sid, { json: JSON.stringify(sess), expiresAt, owner });
    this.nextExpiryAt = Math.min(this.nextExpiryAt, expiresAt);
    if (!held && isOwned(sess)) this.indexNew(sid, sess, expiresAt);
    callback?.();
  }

  // a login's new session joins its user's index; past the per-user cap, the least recently seen other one ends
  private indexNew(sid: string, sess: OwnedSession, expiresAt: number): void {
    const user = sess.user.name;
    let sids = this.users.get(user);
    if (!sids) {
      sids = [];
      this.users.set(user, sids);
    }
    sids.push(sid);
    this.options.audit?.(sessionEvent('session_created', user, activeSession(sid, sess, expiresAt)));
    while (sids.length > this.options.maxPerUser) {
      let oldest: { sid: string; lastSeenAt: number } | undefined;
      for (const other of sids) {
        const lastSeenAt = this.sessions.get(other)?.owner?.lastSeenAt ?? Number.NEGATIVE_INFINITY;
        if (other !== sid && (oldest === undefined || lastSeenAt < oldest.lastSeenAt)) oldest = { sid: other, lastSeenAt };
      }
      if (oldest === undefined) break;
      this.drop(oldest.sid, 'evicted');
    }
  }

  // no `touch`: the idle timeout counts from the last renewal, which is a save (see renewSession)

  override createSession(req: Request, sess: SessionData) {
    return markLoaded(super.createSession(req, sess));
  }

  override destroy(sid: string, callback?: Callback): void {
    this.drop(sid, 'logout');
    callback?.();
  }

  override length(callback: (err: unknown, length?: number) => void): void {
    callback(null, this.sessions.size);
  }

  override clear(callback?: Callback): void {
    this.sessions.clear();
    this.users.clear();
    callback?.();
  }

  async listSessions(user: string): Promise<ActiveSession[]> {
    const sessions: ActiveSession[] = [];
    for (const sid of [...(this.users.get(user) ?? [])]) {
      const entry = this.live(sid);
      const sess = entry && (JSON.parse(entry.json) as SessionData);
      if (sess && isOwned(sess)) sessions.push(activeSession(sid, sess, entry.expiresAt));
    }
    return sessions.sort(byLastSeen);
  }

  async endSession(user: string, handle: string, reason: EndReason): Promise<boolean> {
    const sid = this.users.get(user)?.find((candidate) => this.sessions.get(candidate)?.owner?.handle === handle);
    return sid !== undefined && this.live(sid) !== undefined && this.drop(sid, reason);
  }

  async endUserSessions(user: string, { except, reason }: { except?: string; reason: EndReason }): Promise<number> {
    let ended = 0;
    for (const sid of [...(this.users.get(user) ?? [])]) {
      if (this.sessions.get(sid)?.owner?.handle !== except && this.live(sid) !== undefined && this.drop(sid, reason)) ended += 1;
    }
    return ended;
  }

  async endAllSessions(): Promise<number> {
    this.prune();
    let ended = 0;
    for (const sid of this.sessions.keys()) if (this.drop(sid, 'revoked_by_admin')) ended += 1;
    return ended;
  }

  /**
   * Removes a session and its index entry, telling the audit log why it ended (for `timeout`, the rule says which
   * one; worked out only when there is an audit log to tell); false when there was none.
   */
  private drop(sid: string, reason: EndReason | 'timeout'): boolean {
    const entry = this.sessions.get(sid);
    if (entry === undefined) return false;
    this.sessions.delete(sid);
    const owner = entry.owner;
    if (owner === undefined) return true;
    const sids = this.users.get(owner.user) ?? [];
    const at = sids.indexOf(sid);
    if (at !== -1) sids.splice(at, 1);
    if (sids.length === 0) this.users.delete(owner.user);
    if (this.options.audit) {
      const sess = JSON.parse(entry.json) as SessionData;
      const why = reason === 'timeout' ? this.options.expiresAt.reason(sess) : reason;
      if (isOwned(sess)) this.options.audit(sessionEvent('session_ended', owner.user, activeSession(sid, sess, entry.expiresAt), why));
    }
    return true;
  }


  /** removes every expired session; returns how many went */
  prune(now = Date.now()): number {
    let removed = 0;
    let nextExpiryAt = Number.POSITIVE_INFINITY;
    for (const [sid, entry] of this.sessions) {
      if (entry.expiresAt <= now) {
        this.drop(sid, 'timeout');
        removed += 1;
      } else if (entry.expiresAt < nextExpiryAt) {
        nextExpiryAt = entry.expiresAt;
      }
    }
    this.nextExpiryAt = nextExpiryAt;
    return removed;
  }

  close(): void {
    clearInterval(this.timer);
  }

  private live(sid: string): Entry | undefined {
    const entry = this.sessions.get(sid);
    if (entry && entry.expiresAt <= Date.now()) {
      this.drop(sid, 'timeout');
      return undefined;
    }
    return entry;
  }

  private isFull(): boolean {
    if (this.sessions.size < this.options.max) return false;
    const now = Date.now();
    if (now < this.nextExpiryAt) return true;
    // the sessions written longest ago are at the front: in a steady stream of logins, those are the expired ones
    for (const [sid, entry] of this.sessions) {
      if (entry.expiresAt > now) break;
      this.drop(sid, 'timeout');
    }
    // something expired out of order (an absolute timeout, a renewal's shorter expiry): scan, once a second at most
    if (this.sessions.size >= this.options.max && now - this.lastFullSweepAt >= MIN_FULL_SWEEP_INTERVAL_MS) {
      this.lastFullSweepAt = now;
      this.prune(now);
    }
    return this.sessions.size >= this.options.max;
  }
}
