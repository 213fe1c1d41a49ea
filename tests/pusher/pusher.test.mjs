// The real pusher-js client, pusher server library and Laravel Echo, unmodified, against two
// gateway nodes on Redis (docs/pusher.md): public, private, presence and private-encrypted
// channels with members right across the nodes (and across a SIGKILL), client events, events
// triggered by the server library (single, batch, several channels, socket_id exclusion, to a
// user), channel queries, user sign-in and termination, webhooks checked by the library's own
// verification, and refused signatures.
//
// npm test runs it with --test-force-exit (Node 20.14+): after a connection the server closed
// with 4009, pusher-js closes the socket again and its bundled faye-websocket arms a 30 s close
// timer that nothing clears, which would keep the process alive that long after the tests.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import PusherClient from 'pusher-js';
import PusherServer from 'pusher';
import Echo from 'laravel-echo';
import { dropPrefix, eventually, killAll, startNode, uniq } from '../../clients/js/test/helpers.mjs';

const appId = uniq('app');
const key = uniq('key');
const secret = 'pusher-test-secret-' + randomBytes(8).toString('hex');
const redis = process.env.GATEWAY_REDIS_ADDR ?? '127.0.0.1:6379';
// The key end-to-end encrypted channels are encrypted with, by the server library (and the app's
// auth endpoint, which gives each client its channel's shared secret).
const encryptionMasterKeyBase64 = randomBytes(32).toString('base64');

const broker = process.env.PUSHER_TEST_BROKER ?? 'redis'; // another for a manual run: PUSHER_TEST_BROKER=nats npm test
const prefixes = []; // the topic prefixes of this file's nodes: what they left on the broker goes at the end

/** prefix returns a topic prefix of its own, whose keys or streams are deleted after the last test. */
function prefix(p) {
  const u = uniq(p);
  prefixes.push(u);
  return u;
}

let node1, node2, server1, server2, hookServer;
const clients = [];
// hooks are the webhook events received, each with how many POSTs carried it; badHooks the
// POSTs the library's own check refused.
const hooks = [];
let badHooks = 0;

/** listenHooks starts the app's webhook receiver: each POST is checked with pusher.webhook(). */
async function listenHooks() {
  const verify = new PusherServer({ appId, key, secret, host: '127.0.0.1' });
  hookServer = http.createServer((req, res) => {
    let rawBody = '';
    req.on('data', (c) => (rawBody += c));
    req.on('end', () => {
      const wh = verify.webhook({ headers: req.headers, rawBody });
      if (!wh.isValid()) {
        badHooks++;
        res.writeHead(401).end();
        return;
      }
      for (const ev of wh.getEvents()) hooks.push(ev);
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve) => hookServer.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${hookServer.address().port}/pusher/webhooks`;
}

before(async () => {
  const hookURL = await listenHooks();
  const env = {
    GATEWAY_PUSHER_WEBHOOK_URL: hookURL,
    GATEWAY_WEBHOOKS_BATCH_WAIT: '20ms',
    GATEWAY_BROKER: broker,
    GATEWAY_REDIS_ADDR: redis,
    GATEWAY_TOPIC_PREFIX: prefix('pt'),
    GATEWAY_PUSHER_APPS: `${appId}:${key}:${secret}`,
    GATEWAY_PUSHER_CLIENT_EVENTS: 'true',
  };
  [node1, node2] = await Promise.all([startNode(env), startNode(env)]);
  server1 = serverLib(node1);
  server2 = serverLib(node2);
});

after(async () => {
  for (const c of clients) c.disconnect();
  await killAll();
  hookServer?.close();
  for (const p of prefixes.splice(0)) await dropPrefix(broker, p);
});

function serverLib(node, s = secret) {
  return new PusherServer({ appId, key, secret: s, host: '127.0.0.1', port: String(node.port), useTLS: false,
    encryptionMasterKeyBase64 });
}

/** clientOptions are pusher-js's options for node, with the app's auth endpoint played by auth. */
function clientOptions(node, auth, userAuth) {
  return {
    cluster: 'local',
    wsHost: '127.0.0.1',
    wsPort: node.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: { customHandler: auth },
    userAuthentication: { customHandler: userAuth ?? ((_, cb) => cb(new Error('no user'), null)) },
  };
}

function waitConnected(client) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('not connected in 10 s')), 10000);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    if (client.connection.state === 'connected') done();
    else client.connection.bind('connected', done);
  });
}

/**
 * connect opens a pusher-js client to node; user (when given) is who presence channels sign in as;
 * the channels named in forged are signed with another secret.
 */
async function connect(node, user, forged = new Set(), me) {
  const good = serverLib(node);
  const bad = serverLib(node, 'another-secret-entirely');
  const client = new PusherClient(key, clientOptions(node,
    ({ socketId, channelName }, callback) => {
      const presence = channelName.startsWith('presence-') ? { user_id: user.id, user_info: user.info } : undefined;
      const auth = forged.has(channelName) ? bad : good;
      callback(null, auth.authorizeChannel(socketId, channelName, presence));
    },
    me && (({ socketId }, callback) => callback(null, good.authenticateUser(socketId, me)))));
  clients.push(client);
  await waitConnected(client);
  assert.match(client.connection.socket_id, /^\d+\.\d+$/);
  return client;
}

/** subscribe subscribes client to name and waits for pusher:subscription_succeeded. */
function subscribe(client, name) {
  const ch = client.subscribe(name);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: not subscribed in 10 s`)), 10000);
    ch.bind('pusher:subscription_succeeded', (data) => {
      clearTimeout(timer);
      resolve([ch, data]);
    });
    ch.bind('pusher:subscription_error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${name}: subscription_error ${JSON.stringify(err)}`));
    });
  });
}

/** record collects the events of ch named ev. */
function record(ch, ev) {
  const got = [];
  ch.bind(ev, (data, meta) => got.push({ data, meta }));
  return got;
}

test('public channel: an event triggered through the other node arrives, once', async () => {
  const a = await connect(node1);
  const name = uniq('news-');
  const [ch] = await subscribe(a, name);
  const got = record(ch, 'headline');
  await server2.trigger(name, 'headline', { text: 'hello' });
  await eventually(() => got.length === 1, 'the headline');
  assert.deepEqual(got[0].data, { text: 'hello' });
  await server2.trigger(name, 'headline', 'plain text');
  await eventually(() => got.length === 2, 'the second headline');
  assert.equal(got[1].data, 'plain text');
});

test('several channels, batch, and socket_id exclusion', async () => {
  const a = await connect(node1);
  const b = await connect(node2);
  const n1 = uniq('multi-a-');
  const n2 = uniq('multi-b-');
  const [a1] = await subscribe(a, n1);
  const [b2] = await subscribe(b, n2);
  const [a2] = await subscribe(a, n2);
  const ga1 = record(a1, 'ev');
  const ga2 = record(a2, 'ev');
  const gb2 = record(b2, 'ev');
  await server1.trigger([n1, n2], 'ev', { n: 1 });
  await eventually(() => ga1.length === 1 && ga2.length === 1 && gb2.length === 1, 'the event on both channels');
  // Excluded: a's socket gets nothing of the next trigger, b does.
  await server1.trigger(n2, 'ev', { n: 2 }, { socket_id: a.connection.socket_id });
  await eventually(() => gb2.length === 2, "b's second event");
  await server2.triggerBatch([
    { channel: n1, name: 'ev', data: { n: 3 } },
    { channel: n2, name: 'ev', data: { n: 4 } },
  ]);
  await eventually(() => ga1.length === 2 && ga2.length === 2 && gb2.length === 3, 'the batch');
  assert.deepEqual(ga2.map((x) => x.data.n), [1, 4], 'the excluded socket got the event it was excluded from');
  assert.deepEqual(gb2.map((x) => x.data.n), [1, 2, 4]);
  assert.deepEqual(ga1.map((x) => x.data.n), [1, 3]);
});

test('private channel: client events reach the others across nodes, not the sender', async () => {
  const a = await connect(node1);
  const b = await connect(node2);
  const name = uniq('private-chat-');
  const [cha] = await subscribe(a, name);
  const [chb] = await subscribe(b, name);
  const ga = record(cha, 'client-typing');
  const gb = record(chb, 'client-typing');
  assert.ok(cha.trigger('client-typing', { who: 'a' }));
  await eventually(() => gb.length === 1, 'the client event at b');
  assert.deepEqual(gb[0].data, { who: 'a' });
  // An event from b reaches a; a's own never came back to it.
  chb.trigger('client-typing', { who: 'b' });
  await eventually(() => ga.length === 1, 'the client event at a');
  assert.deepEqual(ga.map((x) => x.data.who), ['b']);
  assert.deepEqual(gb.map((x) => x.data.who), ['a']);
});

test('private channel: a wrong signature is refused with subscription_error 401', async () => {
  const name = uniq('private-locked-');
  const a = await connect(node1, undefined, new Set([name]));
  const err = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no subscription_error')), 10000);
    const c = a.subscribe(name);
    c.bind('pusher:subscription_error', (e) => {
      clearTimeout(timer);
      resolve(e);
    });
    c.bind('pusher:subscription_succeeded', () => reject(new Error('subscribed with a wrong signature')));
  });
  assert.equal(err.status, 401);
});

test('client events over 10 a second are refused with 4301', async () => {
  const a = await connect(node1);
  const name = uniq('private-burst-');
  const [ch] = await subscribe(a, name);
  const errors = [];
  a.connection.bind('error', (e) => errors.push(e));
  for (let i = 0; i < 15; i++) ch.trigger('client-burst', { i });
  await eventually(() => errors.some((e) => e?.data?.code === 4301), 'a 4301 error', 10000);
});

test('presence: members right across two nodes, once per user', async () => {
  const name = uniq('presence-room-');
  const alice = { id: 'alice', info: { name: 'Alice' } };
  const bob = { id: 'bob', info: { name: 'Bob' } };
  const a = await connect(node1, alice);
  const [cha, first] = await subscribe(a, name);
  assert.equal(first.count, 1);
  assert.deepEqual(first.me, { id: 'alice', info: { name: 'Alice' } });
  const added = record(cha, 'pusher:member_added');
  const removed = record(cha, 'pusher:member_removed');

  const b = await connect(node2, bob);
  const [chb, second] = await subscribe(b, name);
  assert.equal(second.count, 2);
  assert.deepEqual(Object.keys(second.members).sort(), ['alice', 'bob']);
  assert.deepEqual(second.members.alice, { name: 'Alice' });
  await eventually(() => added.length === 1, "alice told bob's arrival");
  assert.deepEqual(added[0].data, { id: 'bob', info: { name: 'Bob' } });
  assert.equal(cha.members.count, 2);

  // Bob's second connection, on alice's node: no member_added, and its list has two users.
  const b2 = await connect(node1, bob);
  const [, third] = await subscribe(b2, name);
  assert.equal(third.count, 2);
  const bobAdded = record(chb, 'pusher:member_added');

  // A client event on a presence channel carries the sender's user_id.
  const gotA = record(cha, 'client-hi');
  chb.trigger('client-hi', { from: 'bob' });
  await eventually(() => gotA.length === 1, 'the client event');
  assert.equal(gotA[0].meta?.user_id, 'bob');

  // The channel queries, through either node.
  const info = await (await server1.get({ path: `/channels/${name}`, params: { info: 'user_count,subscription_count' } })).json();
  assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 3 });
  const users = await (await server2.get({ path: `/channels/${name}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);
  const list = await (await server2.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
  assert.deepEqual(list.channels[name], { user_count: 2 });

  // One of bob's two connections goes: bob is still there. The other goes: bob is removed.
  b2.disconnect();
  await eventually(async () => {
    const r = await (await server1.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } })).json();
    return r.subscription_count === 2;
  }, "bob's second connection gone");
  b.disconnect();
  await eventually(() => removed.length === 1, "alice told bob's departure");
  assert.deepEqual(removed[0].data, { id: 'bob', info: { name: 'Bob' } });
  assert.equal(cha.members.count, 1);
  assert.equal(bobAdded.length, 0);
  assert.equal(added.length, 1, 'member_added once for bob, for two connections');
});

test('channel queries: occupied channels by prefix, an empty channel', async () => {
  const a = await connect(node1);
  const name = uniq('query-');
  await subscribe(a, name);
  await eventually(async () => {
    const list = await (await server2.get({ path: '/channels', params: { filter_by_prefix: 'query-' } })).json();
    return list.channels[name] !== undefined;
  }, 'the channel listed');
  const empty = await (await server2.get({ path: `/channels/${uniq('nobody-')}` })).json();
  assert.deepEqual(empty, { occupied: false });
});

test('the HTTP API refuses a wrong secret, and an unknown app key is refused with 4001', async () => {
  const wrong = serverLib(node1, 'not-the-secret-of-this-app');
  await assert.rejects(wrong.trigger(uniq('x-'), 'ev', {}), (err) => err.status === 401);
  const client = new PusherClient('no-such-key', {
    cluster: 'local', wsHost: '127.0.0.1', wsPort: node1.port, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
  });
  clients.push(client);
  const err = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no error for an unknown key')), 10000);
    client.connection.bind('error', (e) => {
      clearTimeout(timer);
      resolve(e);
    });
  });
  assert.equal(err?.error?.data?.code, 4001, JSON.stringify(err));
  // 4001 is in 4000-4099: pusher-js does not reconnect.
  await eventually(() => client.connection.state === 'disconnected', "the client's disconnected state", 10000);
});

test('user sign-in: sendToUser reaches the user on both nodes; terminate_connections closes them on every node', async () => {
  const id = uniq('user-');
  const a = await connect(node1, undefined, new Set(), { id, user_info: { name: 'A' } });
  const b = await connect(node2, undefined, new Set(), { id });
  const other = await connect(node2, undefined, new Set(), { id: uniq('other-') });
  for (const c of [a, b, other]) c.signin();
  const got = [];
  a.user.bind('note', (d) => got.push(['a', d]));
  b.user.bind('note', (d) => got.push(['b', d]));
  await eventually(() => [a, b, other].every((c) => c.user.serverToUserChannel?.subscribed), 'signed in, with the user channels');
  await server2.sendToUser(id, 'note', { n: 1 });
  await eventually(() => got.length === 2, 'the note on both connections');
  assert.deepEqual(got.map(([w, d]) => [w, d.n]).sort(), [['a', 1], ['b', 1]]);

  const told = new Set();
  for (const c of [a, b]) c.connection.bind('error', (e) => e?.data?.code === 4009 && told.add(c));
  await server1.terminateUserConnections(id);
  await eventually(() => told.size === 2, 'both connections told 4009');
  // 4009 is in 4000-4099: pusher-js does not reconnect.
  await eventually(() => a.connection.state === 'disconnected' && b.connection.state === 'disconnected', 'both closed');
  assert.equal(other.connection.state, 'connected');
});

test('webhooks: Pusher-format events, each once per cluster, valid by the library\'s own check', async () => {
  const name = uniq('presence-hooked-');
  const a = await connect(node1, { id: 'ann', info: {} });
  const b = await connect(node2, { id: 'ben', info: {} });
  await subscribe(a, name);
  const [chb] = await subscribe(b, name);
  chb.trigger('client-wave', { hi: 1 });
  const count = (n) => hooks.filter((h) => h.channel === name && `${h.name}${h.user_id ? ':' + h.user_id : ''}` === n).length;
  const got = () => `(got ${JSON.stringify(hooks.filter((h) => h.channel === name))})`;
  const arrived = ['channel_occupied', 'member_added:ann', 'member_added:ben', 'client_event:ben'];
  // Both members are told before they leave (member events are per user, decided when read).
  await eventually(() => arrived.every((n) => count(n) >= 1), () => `the arrivals and the client event ${got()}`);
  a.disconnect();
  b.disconnect();
  const all = [...arrived, 'member_removed:ann', 'member_removed:ben', 'channel_vacated'];
  await eventually(() => all.every((n) => count(n) >= 1), () => `every webhook ${got()}`);
  for (const n of all) assert.equal(count(n), 1, `${n} once`);
  const ce = hooks.find((h) => h.channel === name && h.name === 'client_event');
  assert.equal(ce.event, 'client-wave');
  assert.deepEqual(JSON.parse(ce.data), { hi: 1 });
  assert.equal(ce.socket_id, b.connection.socket_id);
  assert.equal(badHooks, 0);
});

test('private-encrypted: the server library encrypts, the node passes it through, pusher-js decrypts', async () => {
  const name = uniq('private-encrypted-');
  const a = await connect(node1);
  const [ch] = await subscribe(a, name);
  const got = record(ch, 'secret');
  await server2.trigger(name, 'secret', { text: 'only for the subscribers' });
  await eventually(() => got.length === 1, 'the decrypted event');
  assert.deepEqual(got[0].data, { text: 'only for the subscribers' });
  // A channel the node saw as plain would have been read as the raw {nonce, ciphertext}.
});

/** echo is Laravel Echo on a pusher-js client of node, signed in presence channels as user. */
async function echo(node, user) {
  const good = serverLib(node);
  const client = new PusherClient(key, clientOptions(node, ({ socketId, channelName }, cb) => {
    const presence = channelName.startsWith('presence-') ? { user_id: user.id, user_info: user.info } : undefined;
    cb(null, good.authorizeChannel(socketId, channelName, presence));
  }));
  clients.push(client);
  await waitConnected(client);
  return new Echo({ broadcaster: 'pusher', key, client });
}

test('Laravel Echo: public, private (whisper) and presence (here, joining, leaving) across two nodes', async () => {
  const e1 = await echo(node1, { id: 'echo-1', info: { name: 'One' } });
  const e2 = await echo(node2, { id: 'echo-2', info: { name: 'Two' } });
  const pub = uniq('orders-');
  const shipped = [];
  const ready = (ch) => new Promise((resolve) => ch.subscribed(resolve));
  const ch = e1.channel(pub);
  ch.listen('.order.shipped', (d) => shipped.push(d)); // a name as it is
  ch.listen('OrderShipped', (d) => shipped.push(d)); // Echo's namespace: App\Events\OrderShipped
  await ready(ch);
  await server2.trigger(pub, 'order.shipped', { id: 7 });
  await server2.trigger(pub, 'App\\Events\\OrderShipped', { id: 8 });
  await eventually(() => shipped.length === 2, 'both events at the Echo listener');
  assert.deepEqual(shipped.map((d) => d.id), [7, 8]);

  const priv = uniq('chat-');
  const whispers = [];
  const p1 = e1.private(priv).listenForWhisper('typing', (d) => whispers.push(d));
  const p2 = e2.private(priv);
  await Promise.all([ready(p1), ready(p2)]);
  p2.whisper('typing', { who: 'Two' });
  await eventually(() => whispers.length === 1, 'the whisper');
  assert.deepEqual(whispers[0], { who: 'Two' });

  const room = uniq('room-');
  let here;
  const joining = [];
  const leaving = [];
  e1.join(room).here((users) => (here = users)).joining((u) => joining.push(u)).leaving((u) => leaving.push(u));
  await eventually(() => here !== undefined, 'here');
  assert.deepEqual(here, [{ name: 'One' }]);
  let here2;
  e2.join(room).here((users) => (here2 = users));
  await eventually(() => here2 !== undefined && joining.length === 1, 'here at the second, joining at the first');
  assert.deepEqual(here2.map((u) => u.name).sort(), ['One', 'Two']);
  assert.deepEqual(joining, [{ name: 'Two' }]);
  e2.leave(room);
  await eventually(() => leaving.length === 1, 'leaving');
  assert.deepEqual(leaving, [{ name: 'Two' }]);
});

test('SIGKILL: a node process dies, the members it held are removed on the other within the reap bound', async (t) => {
  const heartbeat = 1000;
  const env = {
    GATEWAY_BROKER: broker,
    GATEWAY_REDIS_ADDR: redis,
    GATEWAY_TOPIC_PREFIX: prefix('pk'),
    GATEWAY_PUSHER_APPS: `${appId}:${key}:${secret}`,
    GATEWAY_PRESENCE_HEARTBEAT: `${heartbeat}ms`,
  };
  const [live, doomed] = await Promise.all([startNode(env), startNode(env)]);
  const name = uniq('presence-kill-');
  const a = await connect(live, { id: 'stays', info: {} });
  const [cha] = await subscribe(a, name);
  const removed = record(cha, 'pusher:member_removed');
  const b = await connect(doomed, { id: 'dies', info: {} });
  const c = await connect(doomed, { id: 'dies-too', info: {} });
  await subscribe(b, name);
  await subscribe(c, name);
  await eventually(() => cha.members.count === 3, 'three members at the live node');
  const killed = Date.now();
  await doomed.kill('SIGKILL'); // its connections say no goodbye: the members go by the reaping only
  b.disconnect(); // and do not come back (the test's other clients are on node1 and node2)
  c.disconnect();
  await eventually(() => removed.length === 2, 'member_removed for both users of the dead node', 10000);
  const took = Date.now() - killed;
  t.diagnostic(`member_removed ${took} ms after the SIGKILL (heartbeat ${heartbeat} ms)`);
  assert.deepEqual(removed.map((r) => r.data.id).sort(), ['dies', 'dies-too']);
  assert.equal(cha.members.count, 1);
  const users = await (await serverLib(live).get({ path: `/channels/${name}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id), ['stays']);
  // The reap bound (docs/presence.md): 1.75 heartbeats plus round trips; 1 s of slack.
  assert.ok(took <= 1.75 * heartbeat + 1000, `member_removed ${took} ms after the kill`);
});
