// The benchmark's failover scenario: a steady mix of GET /user and logins from several connections while the
// primary holding the most sessions is killed (kill -9); what clients saw, measured from the kill.
import { redisCli, sleep, type ClusterTopology, type SentinelTopology } from '../processes';

export interface Failover {
  topology: 'sentinel' | 'cluster';
  /** sessions logged in before the kill, and how many of them the killed primary held */
  sessions: number;
  onKilledPrimary: number;
  requests: number;
  /** first 503 sent to last 503 answered, in ms from the kill; null when there was none */
  first503AtMs: number | null;
  last503AtMs: number | null;
  count503: number;
  /** 5xx other than 503, connection failures and answers slower than 5 s: must be 0 */
  other5xx: number;
  failedOrSlow: number;
  /** a 200 that was not the session's own user: must be 0 */
  wrongAnswers: number;
  /** ms from the kill after which every request succeeded */
  recoveredAtMs: number;
  readableAfter: number;
  loginsDuring: number;
}

interface Target {
  url: string;
  headers: Record<string, string>;
}

const WORKERS = 8;

async function send(target: Target, path: string, method: string, cookie?: string): Promise<{ status: number; name?: string; cookie?: string }> {
  try {
    const res = await fetch(target.url + path, { method, headers: { ...target.headers, ...(cookie ? { cookie } : {}) }, signal: AbortSignal.timeout(5000) });
    const body = (await res.json()) as { data?: { name?: string } };
    return { status: res.status, name: body.data?.name, cookie: res.headers.getSetCookie()[0]?.split(';', 1)[0] };
  } catch {
    return { status: 0 };
  }
}

/** the primary's port holding the most session keys, and how many */
async function busiestPrimary(ports: number[]): Promise<{ port: number; sessions: number }> {
  let best = { port: ports[0]!, sessions: -1 };
  for (const port of ports) {
    const keys = (await redisCli(['-p', String(port), '--scan', '--pattern', 'sess:*'])).split('\n').filter(Boolean).length;
    if (keys > best.sessions) best = { port, sessions: keys };
  }
  return best;
}

/**
 * Logs in `count` users, then runs WORKERS connections of GET /user (four in five, on those sessions) and logins
 * (one in five, new users) from `beforeMs` before the kill until `afterMs` after it; then reads every session again.
 */
export async function failover(
  kind: Failover['topology'],
  topology: SentinelTopology | ClusterTopology,
  target: Target,
  { count = 200, beforeMs = 2000, afterMs = 12_000 } = {},
): Promise<Failover> {
  const sessions: { name: string; cookie: string }[] = [];
  for (let i = 0; i < count; i += 1) {
    const name = `failover-${kind}-${i}`;
    const res = await send(target, `/login?name=${name}`, 'POST');
    if (res.status !== 201 || !res.cookie) throw new Error(`${kind}: login before the kill answered ${res.status}`);
    sessions.push({ name, cookie: res.cookie });
  }
  const primaries = 'primaries' in topology ? [...(await topology.primaries()).keys()] : [await topology.primaryPort()];
  const busiest = await busiestPrimary(primaries);
  await topology.synced();

  const samples: { sentAt: number; doneAt: number; status: number; wrong: boolean }[] = [];
  let killedAt = Number.POSITIVE_INFINITY;
  const end = Date.now() + beforeMs + afterMs;
  let logins = 0;
  const worker = async (id: number) => {
    for (let i = id; Date.now() < end; i += WORKERS) {
      const sentAt = Date.now();
      if (i % 5 === 4) {
        const res = await send(target, `/login?name=failover-${kind}-new-${i}`, 'POST');
        if (sentAt >= killedAt && res.status === 201) logins += 1;
        samples.push({ sentAt, doneAt: Date.now(), status: res.status === 201 ? 200 : res.status, wrong: false });
      } else {
        const session = sessions[i % sessions.length]!;
        const res = await send(target, '/user', 'GET', session.cookie);
        samples.push({ sentAt, doneAt: Date.now(), status: res.status, wrong: res.status === 200 && res.name !== session.name });
      }
    }
  };
  const running = Promise.all(Array.from({ length: WORKERS }, (_, id) => worker(id)));
  await sleep(beforeMs);
  killedAt = Date.now();
  if ('primaries' in topology) await topology.kill(busiest.port);
  else await topology.killPrimary();
  await running;

  const after = samples.filter((s) => s.sentAt >= killedAt).map((s) => ({ ...s, sentAt: s.sentAt - killedAt, doneAt: s.doneAt - killedAt }));
  const refused = after.filter((s) => s.status === 503);
  const failing = after.filter((s) => s.status !== 200 || s.wrong || s.doneAt - s.sentAt >= 5000);
  let readableAfter = 0;
  for (const session of sessions) if ((await send(target, '/user', 'GET', session.cookie)).name === session.name) readableAfter += 1;
  return {
    topology: kind,
    sessions: count,
    onKilledPrimary: busiest.sessions,
    requests: after.length,
    first503AtMs: refused.length ? Math.min(...refused.map((s) => s.sentAt)) : null,
    last503AtMs: refused.length ? Math.max(...refused.map((s) => s.doneAt)) : null,
    count503: refused.length,
    other5xx: after.filter((s) => s.status >= 500 && s.status !== 503).length,
    failedOrSlow: after.filter((s) => s.status === 0 || s.doneAt - s.sentAt >= 5000).length,
    wrongAnswers: after.filter((s) => s.wrong).length,
    recoveredAtMs: failing.length ? Math.max(...failing.map((s) => s.doneAt)) : 0,
    readableAfter,
    loginsDuring: logins,
  };
}
