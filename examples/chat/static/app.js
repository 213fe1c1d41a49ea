// The chat page: a plain ES module, no build step. It loads the gateway's JS client from
// /client/index.js (clients/js/dist, served by the chat server), asks the chat server for a token
// before every (re)connect, subscribes to "chat:<room>" and shows what arrives, and who is online
// in the room (the gateway's presence: presence.channels and presence.join_leave on chat:*).
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

let session = null; // { client, channel, user, subscriptions, off: [], presence }

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

// ---- who is online ----------------------------------------------------------------------------
// The list is the room's presence read with presenceAll after every `subscribed` (the first one,
// and every resume, which may have missed joins and leaves), with the join and leave events applied
// on top, by session: a join adds the member, a leave removes it. The events come in order, so
// replaying those that came since the read began over its answer leaves the list right, whichever
// of the two the gateway saw first.

const STATS_DELAY = 1000; // ms between two reads of the counts, when the room has too many to list

function newPresence() {
  // state: off (no presence on this room, or not read yet), loading, live, counts
  return { state: 'off', members: new Map(), since: null, gen: 0, counts: null, note: '', statsTimer: 0 };
}

function applyPresence(p, e) {
  if (e.kind === 'join') p.members.set(e.member.session, e.member);
  else p.members.delete(e.member.session);
}

async function refreshPresence(s) {
  const p = s.presence;
  const gen = ++p.gen;
  p.since = [];
  if (p.state === 'off') p.state = 'loading';
  renderPresence(s);
  let res;
  try {
    res = await s.client.presenceAll(s.channel);
  } catch (e) {
    if (session !== s || gen !== p.gen) return;
    p.since = null;
    p.members.clear();
    p.state = 'off';
    p.note = e.code === 'bad_request'
      ? 'Presence is off for this room: start the gateways with GATEWAY_PRESENCE_CHANNELS=chat:* and GATEWAY_PRESENCE_JOIN_LEAVE=chat:*.'
      : `Cannot read who is online: ${e.code ? `${e.code}: ` : ''}${e.message}`;
    log('presence', p.note, { state: 'off' });
    renderPresence(s);
    return;
  }
  if (session !== s || gen !== p.gen) return; // a later read (or another room) took over
  const since = p.since;
  p.since = null;
  p.note = '';
  if (res.stats) {
    p.state = 'counts';
    p.counts = res.stats;
    p.members.clear();
  } else {
    p.state = 'live';
    p.members = new Map(res.members.map((m) => [m.session, m]));
    for (const e of since) applyPresence(p, e);
  }
  renderPresence(s);
}

function onPresenceEvent(s, e) {
  if (e.channel !== s.channel) return;
  const p = s.presence;
  log(e.kind, `${e.member.user || '(anonymous)'} ${e.kind === 'join' ? 'joined' : 'left'} (node ${e.member.node})`,
    { user: e.member.user, session: e.member.session, node: e.member.node });
  if (p.since) p.since.push(e);
  if (p.state === 'counts') {
    // Too many to list: read the counts again, at most once a STATS_DELAY.
    if (!p.statsTimer) {
      p.statsTimer = setTimeout(async () => {
        p.statsTimer = 0;
        try {
          const counts = await s.client.presenceStats(s.channel);
          if (session === s && p.state === 'counts') { p.counts = counts; renderPresence(s); }
        } catch { /* the next event or resume tries again */ }
      }, STATS_DELAY);
    }
    return;
  }
  applyPresence(p, e);
  renderPresence(s);
}

function renderPresence(s) {
  const p = s.presence;
  $('presence').dataset.state = p.state;
  const list = $('online');
  const note = $('presence-note');
  if (p.state === 'counts') {
    list.replaceChildren();
    $('online-count').textContent = `(${p.counts.users})`;
    note.textContent = `${p.counts.users} people in ${p.counts.connections} tabs: too many to list.`;
    return;
  }
  if (p.state !== 'live') {
    list.replaceChildren();
    $('online-count').textContent = '';
    note.textContent = p.state === 'loading' ? 'Reading who is online…' : p.note;
    return;
  }
  const users = new Map(); // user -> { sessions, nodes }
  for (const m of p.members.values()) {
    const u = users.get(m.user) ?? { sessions: 0, nodes: new Set() };
    u.sessions++;
    u.nodes.add(m.node);
    users.set(m.user, u);
  }
  const items = [...users.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([user, u]) => {
    const li = document.createElement('li');
    if (user === s.user) li.classList.add('me');
    li.dataset.user = user;
    li.dataset.sessions = String(u.sessions);
    const nodes = [...u.nodes].sort();
    li.dataset.nodes = nodes.join(',');
    const name = document.createElement('span');
    name.className = 'user';
    name.textContent = (user || '(anonymous)') + (user === s.user ? ' (you)' : '');
    const where = document.createElement('span');
    where.className = 'where';
    where.textContent = `${nodes.join(', ')}${u.sessions > 1 ? ` · ${u.sessions} tabs` : ''}`;
    li.append(name, where);
    return li;
  });
  list.replaceChildren(...items);
  $('online-count').textContent = `(${users.size})`;
  note.textContent = '';
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
  const s = { client, channel, user, subscriptions: 0, off: [], presence: newPresence() };
  session = s;

  $('join').hidden = true;
  $('chat').hidden = false;
  $('room-name').textContent = room;
  $('who').textContent = `as ${user}`;
  $('messages').replaceChildren();
  $('log').replaceChildren();
  $('banner').hidden = true;
  renderPresence(s);
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
    refreshPresence(s);
  }));
  s.off.push(client.on('join', (e) => onPresenceEvent(s, e)));
  s.off.push(client.on('leave', (e) => onPresenceEvent(s, e)));
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
  clearTimeout(session.presence.statsTimer);
  session.client.close();
  session = null;
  $('online').replaceChildren();
  $('online-count').textContent = '';
  $('presence-note').textContent = '';
  $('presence').dataset.state = 'off';
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
