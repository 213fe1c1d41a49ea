// The chat page: a plain ES module, no build step. It loads the gateway's JS client from
// /client/index.js (clients/js/dist, served by the chat server), asks the chat server for a token
// before every (re)connect, subscribes to "chat:<room>" and shows what arrives.
//
// Query parameters: ?user=NAME&room=ROOM join at once; ?nodes=ws://host:port/ws,ws://... replaces
// the gateway URLs the server offers (GET /config). The client tries them in turn, moving to the
// next one on each reconnect.
import { Client } from '/client/index.js';

const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const MAX_LOG = 200;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

let session = null; // { client, channel, user, unsubscribe: [] }

function showError(text) {
  const el = $('error');
  el.textContent = text;
  el.hidden = !text;
}

function log(event, text, attrs = {}) {
  const li = document.createElement('li');
  li.dataset.event = event;
  for (const [k, v] of Object.entries(attrs)) li.dataset[k] = String(v);
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  const list = $('log');
  list.append(li);
  while (list.children.length > MAX_LOG) list.firstElementChild.remove();
}

function setStatus(state, node) {
  const status = $('status');
  status.dataset.state = state;
  status.dataset.node = node ?? '';
  $('state').textContent = state;
  $('node').textContent = node ? `node ${node}` : '';
}

function fromOf(m) {
  // The client gives the publishing user; tolerate the wire form {user, session} as well.
  if (typeof m.from === 'string') return m.from;
  if (m.from && typeof m.from === 'object' && typeof m.from.user === 'string') return m.from.user;
  return undefined;
}

function textOf(data) {
  if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
  return JSON.stringify(data);
}

function addMessage(m, me) {
  const from = fromOf(m);
  const li = document.createElement('li');
  li.className = 'msg';
  if (from === me) li.classList.add('mine');
  li.dataset.id = m.id;
  li.dataset.position = m.position;
  li.dataset.from = from ?? '';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from ?? 'service';
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = textOf(m.data);
  li.append(who, text);
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

let pending = 0;
function setPending(delta) {
  pending += delta;
  const el = $('pending');
  el.dataset.pending = String(pending);
  el.textContent = pending > 0 ? `sending ${pending}…` : '';
}

async function gatewayURLs() {
  const given = params.get('nodes');
  let nodes;
  if (given) {
    nodes = given.split(',').map((s) => s.trim()).filter(Boolean);
  } else {
    const r = await fetch('/config', { cache: 'no-store' });
    if (!r.ok) throw new Error(`GET /config: HTTP ${r.status}`);
    nodes = (await r.json()).nodes ?? [];
  }
  for (const n of nodes) {
    if (!/^wss?:\/\//.test(n)) throw new Error(`not a ws:// or wss:// URL: ${n}`);
  }
  if (nodes.length === 0) throw new Error('no gateway URL: start the chat server with -nodes, or open this page with ?nodes=ws://host:port/ws');
  return nodes;
}

async function fetchToken(user) {
  const r = await fetch(`/token?user=${encodeURIComponent(user)}`, { cache: 'no-store' });
  let body = {};
  try { body = await r.json(); } catch { /* not JSON: reported below */ }
  if (!r.ok || typeof body.token !== 'string') {
    throw new Error(`GET /token: ${body?.error?.message ?? `HTTP ${r.status}`}`);
  }
  return body.token;
}

async function join(user, room) {
  showError('');
  if (!NAME_RE.test(user)) return showError('Name: 1 to 32 letters, digits, "_", "." or "-".');
  if (!ROOM_RE.test(room)) return showError('Room: 1 to 64 letters, digits, "_", "." or "-".');
  let nodes;
  try {
    nodes = await gatewayURLs();
  } catch (e) {
    return showError(String(e.message ?? e));
  }

  const channel = `chat:${room}`;
  const client = new Client({ url: nodes, token: () => fetchToken(user) });
  const s = { client, channel, user, subscriptions: 0, off: [] };
  session = s;

  $('join').hidden = true;
  $('chat').hidden = false;
  $('room-name').textContent = room;
  $('who').textContent = `as ${user}`;
  $('messages').replaceChildren();
  $('log').replaceChildren();
  $('banner').hidden = true;
  document.title = `${room} — wsgateway chat`;

  s.off.push(client.on('state', (state, prev) => {
    setStatus(state, state === 'connected' ? client.node : '');
    log('state', `${prev} → ${state}`, { state });
  }));
  s.off.push(client.on('welcome', (w) => {
    setStatus(client.state, w.node);
    log('welcome', `connected to node ${w.node} as ${w.user} (session ${w.session})`, { node: w.node });
  }));
  s.off.push(client.on('subscribed', (sub) => {
    if (sub.channel !== channel) return;
    s.subscriptions++;
    const resumed = s.subscriptions > 1;
    log('subscribed',
      resumed ? `resumed ${sub.channel}: ${sub.recovered ? 'nothing missed' : 'messages may be missing'}` : `joined ${sub.channel}`,
      { channel: sub.channel, position: sub.position, recovered: sub.recovered, resumed });
    // The first subscribe asks for nothing to be recovered; any later one is a resume, and
    // recovered:false there means the gateway could not replay everything that was missed.
    if (resumed && !sub.recovered) $('banner').hidden = false;
  }));
  s.off.push(client.on('message', (m) => {
    if (m.channel === channel) addMessage(m, user);
  }));
  s.off.push(client.on('disconnect', (d) => {
    log('disconnect', `disconnected: ${d.code}${d.reason ? ` (${d.reason})` : ''}${d.reconnect ? '' : ', not reconnecting'}`,
      { code: d.code, reconnect: d.reconnect });
    if (!d.reconnect) showError(`Disconnected by the gateway: ${d.code}${d.reason ? ` (${d.reason})` : ''}`);
  }));
  s.off.push(client.on('error', (e) => {
    log('error', `${e.code}: ${e.message}`, { code: e.code });
  }));

  client.connect();
  try {
    await client.subscribe(channel);
  } catch (e) {
    if (session === s) showError(`Cannot join ${channel}: ${e.code ? `${e.code}: ` : ''}${e.message}`);
  }
  $('input').focus();
}

function leave() {
  if (!session) return;
  for (const off of session.off) off();
  session.client.close();
  session = null;
  setStatus('disconnected', '');
  $('chat').hidden = true;
  $('join').hidden = false;
  showError('');
}

$('join').addEventListener('submit', (ev) => {
  ev.preventDefault();
  join($('name').value.trim(), $('room').value.trim());
});

$('compose').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('input');
  const text = input.value.trim();
  if (!text || !session) return;
  input.value = '';
  const { client, channel } = session;
  setPending(+1);
  // Queued while disconnected; retried with the same msg_id until acknowledged.
  client.publish(channel, { text }).then(
    () => setPending(-1),
    (e) => {
      setPending(-1);
      showError(`Not sent: "${text}" (${e.code ? `${e.code}: ` : ''}${e.message})`);
    },
  );
});

$('leave').addEventListener('click', leave);
$('banner-dismiss').addEventListener('click', () => { $('banner').hidden = true; });
window.addEventListener('pagehide', () => session?.client.close());

const user = params.get('user');
const room = params.get('room');
if (user) $('name').value = user;
if (room) $('room').value = room;
if (user && room) join(user, room);
