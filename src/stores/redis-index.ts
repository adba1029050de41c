import { createHash } from 'node:crypto';
import { tagOf, userTag, type ExpiryRule } from '../session';
import { within } from './redis-topology';
import { sessionEvent, byLastSeen, type ActiveSession, type Audit, type EndReason, type RedisCommands } from './types';


/**
 * The key layout. One user's keys share a hash tag, the user's tag (132 bits of the name's SHA-256, whatever the
 * name holds: braces, spaces, emoji), so they sit in one Redis Cluster slot and each change to them is one script:
 *
 *   sessions:{TAG}:expiry  sorted set, handle -> when the session ends (ms): expired entries are found in O(log n)
 *   sessions:{TAG}:seen    sorted set, handle -> when it was last seen (ms): the least recently seen goes first
 *   sessions:{TAG}:info    hash, handle -> JSON of the entry (session ID, times, browser, OS, IP)
 *   sessions:{TAG}:ended   JSON {before, except, reason}: that user's sessions started by `before` are over, but `except`
 *   sessions:ended         a time (ms): every session started by then is over
 *
 * The first three expire with the user's last session (every script that adds or renews sets their expiry), the
 * stamps when the absolute timeout would have ended what they end: no key lives for good. Nothing depends on
 * keyspace notifications: every script drops the expired entries it meets first.
 */
export const GLOBAL_STAMP = 'sessions:ended';

/** one user's keys, in the order the scripts take them, by the user's tag */
export function tagKeys(tag: string): [expiry: string, seen: string, info: string, ended: string] {
  const prefix = `sessions:{${tag}}:`;
  return [`${prefix}expiry`, `${prefix}seen`, `${prefix}info`, `${prefix}ended`];
}

export const userKeys = (user: string) => tagKeys(userTag(user));

/**
 * Where connect-redis's prefix puts a session: `sess:ID`. On a cluster, a login's session goes in its user's slot,
 * `sess:{TAG}ID`, so one MGET reads it with the user's stamp and one shard holds all of a user's keys.
 */
export const sessionKeys =
  (prefix: string, sharded: boolean) =>
  (sid: string): string => {
    const tag = sharded ? tagOf(sid) : undefined;
    return tag === undefined ? prefix + sid : `${prefix}{${tag}}${sid}`;
  };

// shared by every script: KEYS are one user's four keys. Scripts answer with what they took out of the index as
// (label, entry) pairs: 'timeout', 'global' (the global stamp), an end reason, or 'live' for an entry kept
const PRELUDE = `
local expiry, seen, info, ended = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function remove(handle)
  local entry = redis.call('HGET', info, handle)
  redis.call('HDEL', info, handle)
  redis.call('ZREM', expiry, handle)
  redis.call('ZREM', seen, handle)
  return entry
end
local function prune(now, out)
  for _, handle in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
    local entry = remove(handle)
    if entry then table.insert(out, 'timeout'); table.insert(out, entry) end
  end
end
local function sweep(now, globalBefore, out, listLive)
  prune(now, out)
  local raw = redis.call('GET', ended)
  local stamp = raw and cjson.decode(raw) or { before = -1, except = '', reason = '' }
  local all = redis.call('HGETALL', info)
  for i = 1, #all, 2 do
    local createdAt = cjson.decode(all[i + 1]).createdAt
    if createdAt <= globalBefore then
      table.insert(out, 'global'); table.insert(out, remove(all[i]))
    elseif createdAt <= stamp.before and all[i] ~= stamp.except then
      table.insert(out, stamp.reason); table.insert(out, remove(all[i]))
    elseif listLive then
      table.insert(out, 'live'); table.insert(out, all[i + 1])
    end
  end
end
local function keep()
  local last = redis.call('ZRANGE', expiry, -1, -1, 'WITHSCORES')
  if last[2] then
    for _, key in ipairs({expiry, seen, info}) do redis.call('PEXPIREAT', key, last[2]) end
  end
end
`;

// ARGV: now, handle, entry, expiresAt, lastSeenAt, max, global stamp (-1 for none). What the stamps have ended
// goes first (only while a stamp is there: a sweep reads every entry). The sessions past the cap are answered as
// ('evicted', entry) and left in the index: the caller deletes each session, then its entry, so that a crash in
// between leaves an entry without a session (which a listing drops), never a live session outside the index
const ADD = `${PRELUDE}
local out = {}
if tonumber(ARGV[7]) >= 0 or redis.call('EXISTS', ended) == 1 then sweep(ARGV[1], tonumber(ARGV[7]), out, false) else prune(ARGV[1], out) end
redis.call('HSET', info, ARGV[2], ARGV[3])
redis.call('ZADD', expiry, ARGV[4], ARGV[2])
redis.call('ZADD', seen, ARGV[5], ARGV[2])
local over = redis.call('ZCARD', seen) - tonumber(ARGV[6])
if over > 0 then
  for _, victim in ipairs(redis.call('ZRANGE', seen, 0, over)) do
    if over > 0 and victim ~= ARGV[2] then
      local entry = redis.call('HGET', info, victim)
      if entry then table.insert(out, 'evicted'); table.insert(out, entry) else remove(victim) end
      over = over - 1
    end
  end
end
keep()
return out`;

// ARGV: now, handle, entry, expiresAt, lastSeenAt. Only an entry still there is written: an ended session stays out
const UPDATE = `${PRELUDE}
local out = {}
prune(ARGV[1], out)
if redis.call('HEXISTS', info, ARGV[2]) == 1 then
  redis.call('HSET', info, ARGV[2], ARGV[3])
  redis.call('ZADD', expiry, 'XX', ARGV[4], ARGV[2])
  redis.call('ZADD', seen, 'XX', ARGV[5], ARGV[2])
end
keep()
return out`;

// ARGV: now, handle. Answers the entry removed (nil when there was none, or it had expired) and the pairs
const REMOVE = `${PRELUDE}
local out = {}
prune(ARGV[1], out)
local entry = remove(ARGV[2])
keep()
return { entry, out }`;

// ARGV: now, global stamp (-1 for none)
const LIST = `${PRELUDE}
local out = {}
sweep(ARGV[1], tonumber(ARGV[2]), out, true)
keep()
return out`;

// ARGV: now, global stamp, except ('' for none), reason, the stamp's lifetime (ms). The stamp first: whatever the
// index misses (a session written to Redis but not yet to the index) it ends when that session is next loaded. It
// never moves back (another instance's clock may be ahead), and it spares the caller's session, not an earlier one
const END_USER = `${PRELUDE}
local raw = redis.call('GET', ended)
local before = tonumber(ARGV[1])
if raw then before = math.max(before, cjson.decode(raw).before) end
redis.call('SET', ended, cjson.encode({ before = before, except = ARGV[3], reason = ARGV[4] }), 'PX', ARGV[5])
local out = {}
prune(ARGV[1], out)
local all = redis.call('HGETALL', info)
for i = 1, #all, 2 do
  if all[i] ~= ARGV[3] then
    local label = cjson.decode(all[i + 1]).createdAt <= tonumber(ARGV[2]) and 'global' or ARGV[4]
    table.insert(out, label); table.insert(out, remove(all[i]))
  end
end
keep()
return out`;

// ARGV: now, the stamp's lifetime (ms)
const END_ALL = `
if (tonumber(redis.call('GET', KEYS[1])) or -1) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1`;

interface Script {
  text: string;
  sha: string;
}

const script = (text: string): Script => ({ text, sha: createHash('sha1').update(text).digest('hex') });
const SCRIPTS = { ADD, UPDATE, REMOVE, LIST, END_USER, END_ALL };
type ScriptName = keyof typeof SCRIPTS;
const LOADED = Object.fromEntries(Object.entries(SCRIPTS).map(([name, text]) => [name, script(text)])) as Record<ScriptName, Script>;

// on a cluster, how old the global stamp a request is checked against may be (see recentGlobalStamp), how long a
// read of it is waited for when a last value can stand in, and when one that failed is tried again
const GLOBAL_STAMP_MAX_AGE_MS = 1000;
const GLOBAL_STAMP_WAIT_MS = 500;
const GLOBAL_STAMP_RETRY_MS = 250;

// a stamp outlives every session it could end (the absolute timeout from its moment), with a minute for clocks
const STAMP_MARGIN_MS = 60_000;

/** the stamps a loaded session is checked against: every session started at or before `before` is over */
export interface Stamps {
  global: number | undefined;
  user: { before: number; except: string; reason: EndReason } | undefined;
}

/** the stamps as Redis holds them: the global stamp (-1 for none) and the user's `ended` key */
function parseStamps(global: number, user: string | null | undefined): Stamps {
  return {
    global: global < 0 ? undefined : global,
    user: user ? (JSON.parse(user) as Stamps['user']) : undefined,
  };
}

const stampValue = (raw: string | null | undefined): number => (raw ? Number(raw) : -1);

/** why the stamps end `session`, or undefined while they do not */
export function endedBy(stamps: Stamps, session: { loginAt: number; handle: string }): EndReason | undefined {
  if (stamps.global !== undefined && session.loginAt <= stamps.global) return 'revoked_by_admin';
  const user = stamps.user;
  if (user && session.loginAt <= user.before && session.handle !== user.except) return user.reason;
  return undefined;
}

/**
 * The per-user index in Redis, beside connect-redis's session keys (`sessionKey(sid)`; on one Redis they live in
 * other slots, on a cluster in the user's): each index change is one script (EVALSHA, then EVAL when Redis lost its script cache; written here rather
 * than with the client's `scripts` option, which would retype the client for everything that uses it). Session
 * keys are written first and deleted after, so a crash between the two leaves a session outside its index, and
 * the stamps end it all the same.
 */
export class RedisSessionIndex {
  private readonly stampLifetimeMs: number;
  // the global stamp as this process last read it, and when
  private lastGlobal: number | undefined;
  private lastGlobalAt = 0;
  private globalRead: Promise<number> | undefined;

  constructor(
    private readonly redis: RedisCommands,
    /** a cluster: the global stamp sits in a slot of its own, read beside the user's keys rather than with them */
    private readonly sharded: boolean,
    private readonly sessionKey: (sid: string) => string,
    private readonly options: { expiresAt: ExpiryRule; absoluteTimeoutSeconds: number; maxPerUser: number; audit?: Audit },
  ) {
    this.stampLifetimeMs = options.absoluteTimeoutSeconds * 1000 + STAMP_MARGIN_MS;
  }

  /**
   * A session's stored JSON and, when its ID carries its user's tag, both stamps: one MGET; on a cluster one MGET
   * in the user's slot and a GET of the global stamp, sent together.
   */
  async load(sid: string): Promise<{ raw: string | null; stamps: Stamps | undefined }> {
    const tag = tagOf(sid);
    const key = this.sessionKey(sid);
    if (tag === undefined) return { raw: (await this.redis.get(key)) ?? null, stamps: undefined };
    const [[raw, ended], global] = await this.withGlobalStamp([key, tagKeys(tag)[3]]);
    return { raw: raw ?? null, stamps: parseStamps(global, ended) };
  }

  /**
   * `keys` (all in one slot) and the global stamp: one MGET on one Redis; on a cluster, where the stamp has a slot
   * of its own, an MGET of `keys` beside the stamp as recentGlobalStamp has it
   */
  private async withGlobalStamp(keys: string[]): Promise<[(string | null)[], number]> {
    if (this.sharded) return Promise.all([this.redis.mGet(keys), this.recentGlobalStamp()]);
    const values = await this.redis.mGet([...keys, GLOBAL_STAMP]);
    return [values.slice(0, -1), stampValue(values.at(-1))];
  }

  /** a login's session joins its user's index; past the cap, the least recently seen other one ends */
  async add(user: string, session: ActiveSession, globalStamp: number): Promise<void> {
    const { expiresAt, lastSeenAt, handle } = session;
    const out = await this.run('ADD', user, [Date.now(), handle, JSON.stringify(session), expiresAt, lastSeenAt, this.options.maxPerUser, globalStamp]);
    this.options.audit?.(sessionEvent('session_created', user, session));
    await this.ended(user, out);
  }

  /** a renewal: the entry's last-seen time and expiry, written only while the entry is there */
  async update(user: string, session: ActiveSession): Promise<void> {
    const out = await this.run('UPDATE', user, [Date.now(), session.handle, JSON.stringify(session), session.expiresAt, session.lastSeenAt]);
    await this.ended(user, out);
  }

  /** an entry out of the index; with a reason, the audit log hears of it from whoever removed it */
  async remove(user: string, handle: string, reason?: EndReason): Promise<ActiveSession | undefined> {
    const [entry, out] = (await this.run('REMOVE', user, [Date.now(), handle])) as [string | null, unknown];
    await this.ended(user, out);
    if (typeof entry !== 'string') return undefined;
    const session = JSON.parse(entry) as ActiveSession;
    if (reason) this.options.audit?.(sessionEvent('session_ended', user, session, reason));
    return session;
  }

  async list(user: string): Promise<ActiveSession[]> {
    const out = await this.run('LIST', user, [Date.now(), await this.globalStamp()]);
    const live = await this.ended(user, out);
    // an entry whose session key is gone (a crash between deleting a session and its entry) is no session: drop it
    const exists = await Promise.all(live.map((session) => this.redis.exists(this.sessionKey(session.sid))));
    const ghosts = live.filter((_session, i) => exists[i] === 0);
    await Promise.all(ghosts.map((ghost) => this.remove(user, ghost.handle)));
    return live.filter((_session, i) => exists[i] !== 0).sort(byLastSeen);
  }

  // the session first, then its entry: a crash in between leaves an entry without a session, never the reverse
  async end(user: string, handle: string, reason: EndReason): Promise<boolean> {
    const session = (await this.list(user)).find((candidate) => candidate.handle === handle);
    if (session === undefined) return false;
    await this.redis.del(this.sessionKey(session.sid));
    return (await this.remove(user, handle, reason)) !== undefined;
  }

  async endUser(user: string, except: string | undefined, reason: EndReason): Promise<number> {
    const out = await this.run('END_USER', user, [Date.now(), await this.globalStamp(), except ?? '', reason, this.stampLifetimeMs]);
    const ended = countOf(out, reason);
    await this.ended(user, out);
    return ended;
  }

  async endAll(): Promise<null> {
    const now = Date.now();
    await this.runOn('END_ALL', [GLOBAL_STAMP], [now, this.stampLifetimeMs]);
    // this instance ends them at once, whatever it last read
    this.lastGlobal = Math.max(this.lastGlobal ?? -1, now);
    return null;
  }

  /** both stamps for a session of the user with this tag (the store reads them with the session when it can) */
  async stamps(tag: string): Promise<Stamps> {
    const [[user], global] = await this.withGlobalStamp([tagKeys(tag)[3]]);
    return parseStamps(global, user);
  }

  /** a loaded session the stamps end: its key and entry go, and the audit log hears of it from whoever deleted it */
  async revokeLoaded(user: string, session: ActiveSession, reason: EndReason): Promise<void> {
    const deleted = await this.redis.del(this.sessionKey(session.sid));
    await this.remove(user, session.handle);
    if (deleted === 1) this.options.audit?.(sessionEvent('session_ended', user, session, reason));
  }

  /**
   * The global stamp, -1 for none, read now. On a cluster it lives on one shard, and the other shards' users must
   * not fail with it: while it cannot be read (an error, or no answer within GLOBAL_STAMP_WAIT_MS), the value this
   * process last read stands in, and is tried again GLOBAL_STAMP_RETRY_MS later. It only ever moves forward, and
   * while its shard is away no one can move it.
   */
  async globalStamp(): Promise<number> {
    const fallback = this.sharded ? this.lastGlobal : undefined;
    try {
      const raw = await (fallback === undefined ? this.redis.get(GLOBAL_STAMP) : within(this.redis.get(GLOBAL_STAMP), GLOBAL_STAMP_WAIT_MS));
      this.lastGlobal = Math.max(this.lastGlobal ?? -1, stampValue(raw));
      this.lastGlobalAt = Date.now();
      return this.lastGlobal;
    } catch (err) {
      if (fallback === undefined) throw err;
      this.lastGlobalAt = Date.now() - GLOBAL_STAMP_MAX_AGE_MS + GLOBAL_STAMP_RETRY_MS;
      return fallback;
    }
  }

  /**
   * On a cluster, what each request checks: the global stamp as read less than GLOBAL_STAMP_MAX_AGE_MS ago, else
   * read now (one read for all the requests that need it, sent beside the session's MGET). Reading it with every
   * session would cost each GET /user a command on a second shard; this way an operator's "end everyone" reaches
   * the other instances within a second, and the instance that ran it at once.
   */
  private recentGlobalStamp(): Promise<number> | number {
    if (this.lastGlobal !== undefined && Date.now() - this.lastGlobalAt < GLOBAL_STAMP_MAX_AGE_MS) return this.lastGlobal;
    this.globalRead ??= this.globalStamp().finally(() => (this.globalRead = undefined));
    return this.globalRead;
  }

  /**
   * What a script answered: the live entries are returned; the sessions it took out have their keys deleted and are
   * told to the audit log once (a timeout by whoever noticed it; a session a stamp ended by whoever deleted its key,
   * as a request loading it may be racing); the sessions past the cap are ended, session before entry.
   */
  private async ended(user: string, out: unknown): Promise<ActiveSession[]> {
    const live: ActiveSession[] = [];
    const work: Promise<unknown>[] = [];
    const pairs = Array.isArray(out) ? (out as unknown[]) : [];
    for (let i = 0; i + 1 < pairs.length; i += 2) {
      const [label, entry] = [pairs[i], pairs[i + 1]];
      // an entry a script could not read (a key evicted under memory pressure) names no session to end
      if (typeof label !== 'string' || typeof entry !== 'string') continue;
      const session = JSON.parse(entry) as ActiveSession;
      if (label === 'live') {
        live.push(session);
      } else if (label === 'evicted') {
        work.push(this.redis.del(this.sessionKey(session.sid)).then(() => this.remove(user, session.handle, 'evicted')));
      } else {
        const reason = label === 'timeout' ? this.timeoutReason(session) : label === 'global' ? 'revoked_by_admin' : (label as EndReason);
        work.push(
          this.redis.del(this.sessionKey(session.sid)).then((deleted) => {
            if (label === 'timeout' || deleted === 1) this.options.audit?.(sessionEvent('session_ended', user, session, reason));
          }),
        );
      }
    }
    await Promise.all(work);
    return live;
  }

  private timeoutReason(session: ActiveSession): EndReason {
    // the rule on what the entry kept: it ended at its expiry, which was either login + absolute or the idle end
    return this.options.expiresAt.reason({ loginAt: session.createdAt, cookie: { expires: new Date(session.expiresAt) } } as Parameters<ExpiryRule>[0]);
  }

  private run(name: ScriptName, user: string, args: (string | number)[]): Promise<unknown> {
    return this.runOn(name, userKeys(user), args);
  }

  private async runOn(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    const { sha, text } = LOADED[name];
    const options = { keys, arguments: args.map(String) };
    try {
      return await this.redis.evalSha(sha, options);
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err;
      return this.redis.eval(text, options);
    }
  }
}

const countOf = (out: unknown, label: string): number =>
  Array.isArray(out) ? out.filter((value, i) => i % 2 === 0 && value === label).length : 0;
