// The real pusher-js client and pusher server library, unmodified, against two gateway nodes on
// Redis (docs/pusher.md): public, private and presence channels with members right across the
// nodes, client events, events triggered by the server library (single, batch, several channels,
// socket_id exclusion), channel queries, and refused signatures.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import PusherClient from 'pusher-js';
import PusherServer from 'pusher';
import { eventually, killAll, startNode, uniq } from '../../clients/js/test/helpers.mjs';

const appId = uniq('app');
const key = uniq('key');
const secret = 'pusher-test-secret-' + randomBytes(8).toString('hex');
const redis = process.env.GATEWAY_REDIS_ADDR ?? '127.0.0.1:6379';

let node1, node2, server1, server2;
const clients = [];

before(async () => {
  const env = {
    // Another broker for a manual run: PUSHER_TEST_BROKER=nats (or jetstream) npm test.
    GATEWAY_BROKER: process.env.PUSHER_TEST_BROKER ?? 'redis',
    GATEWAY_REDIS_ADDR: redis,
    GATEWAY_TOPIC_PREFIX: uniq('pt'),
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
});

function serverLib(node, s = secret) {
  return new PusherServer({ appId, key, secret: s, host: '127.0.0.1', port: String(node.port), useTLS: false });
}

/**
 * connect opens a pusher-js client to node; user (when given) is who presence channels sign in as;
 * the channels named in forged are signed with another secret.
 */
async function connect(node, user, forged = new Set()) {
  const good = serverLib(node);
  const bad = serverLib(node, 'another-secret-entirely');
  const client = new PusherClient(key, {
    cluster: 'local',
    wsHost: '127.0.0.1',
    wsPort: node.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence = channelName.startsWith('presence-') ? { user_id: user.id, user_info: user.info } : undefined;
        const auth = forged.has(channelName) ? bad : good;
        callback(null, auth.authorizeChannel(socketId, channelName, presence));
      },
    },
  });
  clients.push(client);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('not connected in 10 s')), 10000);
    client.connection.bind('connected', () => {
      clearTimeout(timer);
      resolve();
    });
  });
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
