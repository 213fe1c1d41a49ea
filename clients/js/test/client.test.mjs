// The client against one real gateway node (memory broker).
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';

import { Client, GatewayError } from '../dist/index.js';
import {
  apiPublish,
  collect,
  deliveredOnce,
  eventually,
  killAll,
  nextEvent,
  rejection,
  startNode,
  startProxy,
  token,
  uniq,
} from './helpers.mjs';

let node;
const clients = new Set();
const proxies = new Set();

/** client makes a Client (closed after the test); connect() is called unless opts.connect is false. */
function client(opts = {}) {
  const { connect = true, ...rest } = opts;
  const c = new Client({ url: node.ws, token: token(uniq('u')), ...rest });
  clients.add(c);
  if (connect) c.connect();
  return c;
}

async function connected(c) {
  if (c.state !== 'connected') await nextEvent(c, 'state', (s) => s === 'connected');
  return c;
}

async function proxy() {
  const p = await startProxy(node.port);
  proxies.add(p);
  return p;
}

before(async () => {
  node = await startNode({ GATEWAY_BROKER: 'memory' });
});

afterEach(async () => {
  for (const c of clients) c.close();
  clients.clear();
  await Promise.all([...proxies].map((p) => p.close()));
  proxies.clear();
});

after(async () => {
  await killAll();
});

describe('single node', () => {
  test('connects: state events, welcome, session, node and user', async () => {
    const user = uniq('alice-');
    const c = client({ token: token(user), connect: false });
    assert.equal(c.state, 'disconnected');
    const states = collect(c, 'state');
    const welcome = nextEvent(c, 'welcome');
    c.connect();
    const w = await welcome;
    await connected(c);
    assert.equal(w.user, user);
    assert.equal(w.node, node.id);
    assert.ok(w.session, 'a session id');
    assert.deepEqual([c.session, c.node, c.user], [w.session, node.id, user]);
    assert.deepEqual(states, ['connecting', 'connected']);
    await c.ping();
  });

  test('subscribe, publish, ack and message events', async () => {
    const room = uniq('room-');
    const alice = uniq('alice-');
    const a = client();
    const b = client({ token: token(alice) });
    const subscribed = collect(a, 'subscribed');
    const s = await a.subscribe(room);
    assert.equal(s.channel, room);
    assert.equal(s.recovered, false);
    assert.ok(s.position);
    assert.deepEqual(subscribed, [s]);
    assert.equal(a.position(room), s.position);

    const got = collect(a);
    const ack1 = await b.publish(room, { text: 'hello', n: 1 });
    assert.match(ack1.msg_id, /^[0-9a-f]{32}$/);
    assert.equal(ack1.attempts, 1);
    const ack2 = await b.publish(room, 'second', { msgId: 'my-id-2' });
    assert.equal(ack2.msg_id, 'my-id-2');
    await eventually(() => got.length >= 2, 'two messages');
    assert.equal(got.length, 2);
    assert.deepEqual(got[0].data, { text: 'hello', n: 1 });
    assert.equal(got[1].data, 'second');
    for (const m of got) {
      assert.equal(m.channel, room);
      assert.equal(m.from, alice);
      assert.equal(m.fromSession, b.session);
      assert.ok(m.id);
    }
    assert.notEqual(got[0].id, got[1].id);
    assert.notEqual(got[0].position, got[1].position);
    assert.equal(a.position(room), got[1].position);

    // A message from a service (the HTTP API) has no `from`.
    await apiPublish(node, { channel: room, data: { service: true } });
    await eventually(() => got.length === 3, 'the API message');
    assert.deepEqual(got[2].data, { service: true });
    assert.equal(got[2].from, undefined);
  });

  test('$user receives what a service addresses to the user; no client may publish to it', async () => {
    const user = uniq('bob-');
    const c = client({ token: token(user) });
    const s = await c.subscribe('$user');
    assert.equal(s.channel, '$user');
    const got = collect(c);
    await apiPublish(node, { user, data: { note: 'for bob' } });
    await apiPublish(node, { user: uniq('someone-else-'), data: 'not for bob' });
    await apiPublish(node, { user, data: { note: 'again' } });
    await eventually(() => got.length >= 2, 'two $user messages');
    assert.deepEqual(
      got.map((m) => [m.channel, m.data]),
      [
        ['$user', { note: 'for bob' }],
        ['$user', { note: 'again' }],
      ],
    );
    assert.equal(c.position('$user'), got[1].position);
    const err = await rejection(c.publish('$user', 1));
    assert.ok(err instanceof GatewayError);
    assert.equal(err.code, 'forbidden');
  });

  test('send is acked with its msg_id', async () => {
    const c = client();
    const a = await c.send({ order: 42 });
    assert.match(a.msg_id, /^[0-9a-f]{32}$/);
    const b = await c.send([1, 2, 3], { msgId: 'send-1' });
    assert.equal(b.msg_id, 'send-1');
  });

  test('error frames reject with a GatewayError and its code; the connection stays open', async () => {
    const c = client({ token: token(uniq('limited-'), { channels: ['room:*'], publish: ['room:a'] }) });
    await connected(c);
    const session = c.session;
    const errors = collect(c, 'error');

    let err = await rejection(c.subscribe('secret'));
    assert.ok(err instanceof GatewayError, String(err));
    assert.equal(err.code, 'forbidden');
    assert.equal(c.position('secret'), undefined);

    err = await rejection(c.publish('room:b', { x: 1 }));
    assert.equal(err.code, 'forbidden');

    // Refused by the client before anything is sent.
    err = await rejection(c.subscribe('has space'));
    assert.equal(err.code, 'bad_request');
    err = await rejection(c.publish('room:a', undefined));
    assert.equal(err.code, 'bad_request');
    err = await rejection(c.publish('room:a', 'x'.repeat(70000)));
    assert.equal(err.code, 'too_large');
    err = await rejection(c.unsubscribe('room:zzz'));
    assert.equal(err.code, 'not_found');

    await c.subscribe('room:a');
    err = await rejection(c.subscribe('room:a'));
    assert.equal(err.code, 'bad_request');

    // Allowed calls still work, on the same connection.
    await c.publish('room:a', 'fine');
    await c.ping();
    assert.equal(c.session, session);
    assert.equal(c.state, 'connected');
    assert.deepEqual(errors, []);
  });

  test('subscribe with since replays what came after the position', async () => {
    const room = uniq('replay-');
    const pub = client();
    const first = client();
    const got = collect(first);
    await first.subscribe(room);
    for (let i = 1; i <= 5; i++) await pub.publish(room, i);
    await eventually(() => got.length === 5, 'five messages');
    const since = got[1].position; // after message 2

    const later = client();
    const replayed = collect(later);
    const s = await later.subscribe(room, { since });
    assert.equal(s.recovered, true);
    // The replay comes before the `subscribed` reply.
    assert.deepEqual(
      replayed.map((m) => m.data),
      [3, 4, 5],
    );
    assert.deepEqual(
      replayed.map((m) => m.id),
      got.slice(2).map((m) => m.id),
    );
    await pub.publish(room, 6);
    await eventually(() => replayed.length === 4, 'the live message');
    assert.equal(replayed[3].data, 6);
  });

  test('unsubscribe ends the messages of a channel', async () => {
    const room = uniq('unsub-');
    const other = uniq('other-');
    const c = client();
    const pub = client();
    const got = collect(c);
    await c.subscribe(room);
    await c.subscribe(other);
    await pub.publish(room, 'before');
    await eventually(() => got.length === 1, 'the first message');
    await c.unsubscribe(room);
    assert.equal(c.position(room), undefined);
    await pub.publish(room, 'after');
    await pub.publish(other, 'sentinel'); // published after: arrives after "after" would have
    await eventually(() => got.some((m) => m.data === 'sentinel'), 'the sentinel');
    assert.deepEqual(
      got.map((m) => m.data),
      ['before', 'sentinel'],
    );
    // It can subscribe again.
    await c.subscribe(room);
  });

  test('calls made before the connection are queued until connected', async () => {
    const room = uniq('queued-');
    const c = client({ connect: false });
    const got = collect(c);
    const sub = c.subscribe(room);
    const ack = c.publish(room, 'queued');
    const pong = c.ping();
    assert.equal(c.state, 'disconnected');
    c.connect();
    await sub;
    assert.equal((await ack).attempts, 1);
    await pong;
    await eventually(() => got.length === 1, 'the queued message');
    assert.equal(got[0].data, 'queued');
  });

  test('the token function is called before every connection: refresh after token_expired', async () => {
    const user = uniq('carol-');
    const room = uniq('refresh-');
    let calls = 0;
    const c = client({
      token: async () => {
        calls++;
        // The first token expires within two seconds; the server then disconnects with
        // token_expired and the client connects again with a fresh one.
        return token(user, { ttl: calls === 1 ? 2 : 3600 });
      },
      minReconnectDelay: 50,
    });
    await connected(c);
    assert.equal(calls, 1);
    const firstSession = c.session;
    await c.subscribe(room);
    const resubscribed = nextEvent(c, 'subscribed', (s) => s.channel === room, 15000);
    const d = await nextEvent(c, 'disconnect', () => true, 15000);
    assert.deepEqual([d.code, d.reconnect], ['token_expired', true]);
    const w = await nextEvent(c, 'welcome', () => true, 15000);
    assert.equal(calls, 2);
    assert.equal(w.user, user);
    assert.notEqual(w.session, firstSession);
    const s = await resubscribed;
    assert.equal(s.recovered, true); // resubscribed with since; nothing was missed
    await c.publish(room, 'still here');
  });

  test('a publish without an ack in time is sent again with the same msg_id and delivered once', async () => {
    const room = uniq('retry-');
    const p = await proxy();
    const watcher = client();
    const got = collect(watcher);
    await watcher.subscribe(room);
    const c = client({ url: p.url, ackTimeout: 300 });
    await connected(c);
    p.hold(); // nothing the server sends reaches c: no ack
    const acked = c.publish(room, 'once', { msgId: 'retry-1' });
    const publishes = () => p.sent.filter((f) => f.type === 'publish' && f.msg_id === 'retry-1');
    await eventually(() => publishes().length >= 2, 'a second attempt');
    p.release();
    const ack = await acked;
    assert.equal(ack.msg_id, 'retry-1');
    assert.ok(ack.attempts >= 2, `attempts ${ack.attempts}`);
    const ids = new Set(publishes().map((f) => f.id));
    assert.equal(ids.size, publishes().length, 'each attempt has its own frame id');
    await c.publish(room, 'sentinel');
    await eventually(() => got.some((m) => m.data === 'sentinel'), 'the sentinel');
    assert.deepEqual(
      got.map((m) => m.data),
      ['once', 'sentinel'],
    );
  });

  test('a publish cut by a lost connection is sent again after the reconnect and delivered once', async () => {
    const room = uniq('cut-');
    const p = await proxy();
    const watcher = client();
    const got = collect(watcher);
    await watcher.subscribe(room);
    const c = client({ url: p.url, minReconnectDelay: 20 });
    await connected(c);
    const firstSession = c.session;
    const disconnects = collect(c, 'disconnect');
    p.hold();
    const acked = c.publish(room, 'cut');
    await eventually(() => got.length === 1, 'the message at the watcher'); // the server has it
    p.drop(); // ...but its ack never reaches c
    p.release();
    const ack = await acked;
    assert.equal(ack.attempts, 2);
    assert.notEqual(c.session, firstSession);
    assert.equal(disconnects[0].code, 'connection_lost');
    assert.equal(disconnects[0].reconnect, true);
    await deliveredOnce(c, p, ack, got, room, 'cut');
  });

  test('close() rejects every pending call with closed, and later calls too', async () => {
    // Never connected: the calls wait in the queue.
    const idle = client({ connect: false });
    const queued = [idle.subscribe('a'), idle.publish('a', 1), idle.send(2), idle.ping()];
    idle.close();
    for (const p of queued) {
      const err = await rejection(p);
      assert.ok(err instanceof GatewayError);
      assert.equal(err.code, 'closed');
    }
    assert.equal(idle.state, 'closed');

    // Connected, the replies held back by a proxy.
    const room = uniq('close-');
    const p = await proxy();
    const c = client({ url: p.url });
    await connected(c);
    const states = collect(c, 'state');
    p.hold();
    const inFlight = [c.subscribe(room), c.publish(room, 1), c.send(2), c.ping()];
    await eventually(() => p.sent.filter((f) => f.type !== 'ping' || f.id !== 'keepalive').length >= 4, 'four frames sent');
    c.close();
    for (const pr of inFlight) assert.equal((await rejection(pr)).code, 'closed');
    assert.deepEqual(states, ['closed']);
    assert.equal((await rejection(c.publish(room, 3))).code, 'closed');
    assert.equal((await rejection(c.subscribe(room))).code, 'closed');
    c.connect(); // does nothing
    assert.equal(c.state, 'closed');
  });
});
