// Drives the three endpoints and shows each answer. Everything from the server is shown with textContent:
// a name is text, never markup.
'use strict';

const responses = document.getElementById('responses');

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
}

document.getElementById('login').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = document.getElementById('name').value;
  call('POST', `/login?name=${encodeURIComponent(name)}`);
});
document.getElementById('profile').addEventListener('click', () => call('GET', '/user'));
document.getElementById('logout').addEventListener('click', () => call('POST', '/logout'));
