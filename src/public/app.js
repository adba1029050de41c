// Drives the endpoints and shows each answer, and lists the sessions open under the name. Everything from the
// server is shown with textContent: a name, a browser or an address is text, never markup.
'use strict';

const responses = document.getElementById('responses');
const sessionList = document.getElementById('sessions');
const sessionNote = document.getElementById('sessions-note');
const endOthers = document.getElementById('end-others');

async function call(method, path) {
  const item = document.createElement('li');
  const status = document.createElement('div');
  const body = document.createElement('pre');
  status.className = 'status';
  item.append(status, body);
  responses.prepend(item);
  try {
    const res = await fetch(path, { method, headers: { Accept: 'application/json' } });
    const text = await res.text();
    status.textContent = `${method} ${path} → ${res.status} ${res.statusText}`;
    body.textContent = text ? JSON.stringify(JSON.parse(text), null, 2) : '(no body)';
    if (!res.ok) item.classList.add('failed');
  } catch (err) {
    status.textContent = `${method} ${path} → failed`;
    body.textContent = String(err);
    item.classList.add('failed');
  }
  await showSessions();
}

// the list under "Your sessions", read again after every call (these reads are not added to the responses); a
// visitor who is not logged in is not asked for a list they cannot have
async function showSessions() {
  let sessions = [];
  try {
    const user = await fetch('/user', { headers: { Accept: 'application/json' } }).then((res) => res.json());
    const res = user.data ? await fetch('/sessions', { headers: { Accept: 'application/json' } }) : undefined;
    if (res?.ok) sessions = (await res.json()).sessions;
  } catch {
    // the list stays empty; the call that failed is in the responses
  }
  sessionNote.hidden = sessions.length > 0;
  endOthers.hidden = !sessions.some((session) => !session.current);
  sessionList.replaceChildren(
    ...sessions.map((session) => {
      const item = document.createElement('li');
      const what = document.createElement('span');
      what.className = 'device';
      what.textContent = `${session.browser} on ${session.os}`;
      const where = document.createElement('span');
      where.className = 'seen';
      where.textContent = `${session.ip}, last seen ${new Date(session.lastSeenAt).toLocaleString()}`;
      item.append(what, where);
      if (session.current) {
        const tag = document.createElement('strong');
        tag.textContent = 'this session';
        item.append(tag);
      } else {
        const end = document.createElement('button');
        end.type = 'button';
        end.textContent = 'End';
        end.addEventListener('click', () => call('DELETE', `/sessions/${encodeURIComponent(session.id)}`));
        item.append(end);
      }
      return item;
    }),
  );
}

document.getElementById('login').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = document.getElementById('name').value;
  call('POST', `/login?name=${encodeURIComponent(name)}`);
});
document.getElementById('profile').addEventListener('click', () => call('GET', '/user'));
document.getElementById('logout').addEventListener('click', () => call('POST', '/logout'));
endOthers.addEventListener('click', () => call('DELETE', '/sessions'));
showSessions();
