// The client against two real gateway nodes sharing Redis (127.0.0.1:6379, or $GATEWAY_REDIS_ADDR):
// failover after SIGKILL and after a drain, resuming with `since`, retries through another node.
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';

import { Client } from '../dist/index.js';
import { apiPublish, collect, deliveredOnce, eventually, killAll, nextEvent, redisDropPrefix, startNode, startProxy, token, uniq } from './helpers.mjs';

const redis = process.env.GATEWAY_REDIS_ADDR || '127.0.0.1:6379';
const clients = new Set();
const proxies = new Set();

let running = []; // the nodes of the current test, whose logs a failure shows
const prefixes = []; // the topic prefixes of the current test, whose Redis keys are deleted after it

/** cluster starts n nodes on Redis with a topic prefix of their own. */
async function cluster(n, env = {}) {
  const prefix = uniq('jsclient-');
  prefixes.push(prefix);
  const nodes = [];
  running = nodes;
  for (let i = 0; i < n; i++) {
    nodes.push(
      await startNode({
        GATEWAY_BROKER: 'redis',
        GATEWAY_REDIS_ADDR: redis,
        GATEWAY_TOPIC_PREFIX: prefix,
        GATEWAY_LOG_LEVEL: 'info',
        ...env,
      }),
    );
  }
  return nodes;
}

function client(opts) {
  const c = new Client(opts);
  clients.add(c);
  c.connect();
  return c;
}

async function connected(c) {
  if (c.state !== 'connected') await nextEvent(c, 'state', (s) => s === 'connected');
  return c;
}

const show = (msgs) => JSON.stringify(msgs.map((m) => [m.channel, m.data]));

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

afterEach(async (t) => {
  if (t.passed === false || process.env.JS_TEST_LOGS) {
    for (const n of running) console.error(`--- logs of node ${n.id}:\n${n.logs.slice(-4000)}`);
  }
  running = [];
  for (const c of clients) c.close();
  clients.clear();
  await Promise.all([...proxies].map((p) => p.close()));
  proxies.clear();
  await killAll();
  for (const p of prefixes.splice(0)) await redisDropPrefix(redis, p);
});

after(async () => {
  await killAll();
});

describe('two nodes on redis', () => {
  test('after SIGKILL of its node the client resumes on the other node: nothing missing, nothing twice', async () => {
    const [a, b] = await cluster(2);
    const room = uniq('room-');
    const user = uniq('dave-');
    let calls = 0;
    let openGate;
    const gate = new Promise((r) => (openGate = r));
    const c = client({
      url: [a.ws, b.ws],
      // The second connection waits for the gate: messages are published while c is away.
      token: async () => {
        calls++;
        if (calls > 1) await gate;
        return token(user);
      },
      minReconnectDelay: 20,
    });
    await connected(c);
    assert.equal(c.node, a.id);
    const got = collect(c);
    const subscribed = collect(c, 'subscribed');
    await c.subscribe(room);
    await c.subscribe('$user');
    for (const i of range(1, 10)) await apiPublish(b, { channel: room, data: i });
    await apiPublish(b, { user, data: 'u1' }); // to the user, through the other node
    await eventually(() => got.length === 11, () => `11 messages before the kill, got ${show(got)}`);

    const disconnect = nextEvent(c, 'disconnect');
    await a.kill('SIGKILL');
    const d = await disconnect;
    assert.deepEqual([d.code, d.reconnect], ['connection_lost', true]);
    await eventually(() => calls === 2, 'a reconnect attempt (its token requested)');
    assert.notEqual(c.state, 'connected');
    for (const i of range(11, 20)) await apiPublish(b, { channel: room, data: i });
    await apiPublish(b, { user, data: 'u2' });
    const own = c.publish(room, 'own'); // queued while disconnected
    openGate();
    const ack = await own;
    assert.equal(ack.attempts, 1);
    assert.equal(c.node, b.id);
    for (const i of range(21, 30)) await apiPublish(b, { channel: room, data: i });
    await eventually(() => got.filter((m) => m.channel === room).length >= 31, () => `31 room messages, got ${show(got)}`);

    const roomData = got.filter((m) => m.channel === room).map((m) => m.data);
    assert.deepEqual(roomData, [...range(1, 20), 'own', ...range(21, 30)]);
    const userData = got.filter((m) => m.channel === '$user').map((m) => m.data);
    assert.deepEqual(userData, ['u1', 'u2']);
    assert.equal(new Set(got.map((m) => m.id)).size, got.length, 'no message twice');
    // Every channel was resubscribed on b and recovered everything after its position.
    const again = subscribed.slice(2);
    assert.deepEqual(
      again.map((s) => [s.channel, s.recovered]).sort(),
      [
        ['$user', true],
        [room, true],
      ],
    );
    assert.equal(c.position(room), got.filter((m) => m.channel === room).at(-1).position);
  });

  test('a drained node sends shutdown; the client moves to the other node and resumes', async () => {
    const [a, b] = await cluster(2, { GATEWAY_DRAIN_PERIOD: '1s' });
    const room = uniq('drain-');
    const c = client({ url: [a.ws, b.ws], token: token(uniq('erin-')), minReconnectDelay: 20 });
    await connected(c);
    assert.equal(c.node, a.id);
    const got = collect(c);
    await c.subscribe(room);
    const pub = client({ url: b.ws, token: token(uniq('frank-')) });
    for (const i of range(1, 5)) await pub.publish(room, i);
    await eventually(() => got.length === 5, () => `five messages, got ${show(got)}`);

    const disconnect = nextEvent(c, 'disconnect');
    const welcome = nextEvent(c, 'welcome');
    const resubscribed = nextEvent(c, 'subscribed', (s) => s.channel === room);
    await a.kill('SIGTERM');
    const d = await disconnect;
    assert.deepEqual([d.code, d.reconnect], ['shutdown', true]);
    for (const i of range(6, 10)) await pub.publish(room, i);
    assert.equal((await welcome).node, b.id);
    assert.equal((await resubscribed).recovered, true);
    for (const i of range(11, 15)) await pub.publish(room, i);
    await eventually(() => got.length >= 15, () => `15 messages, got ${show(got)}`);
    assert.deepEqual(
      got.map((m) => m.data),
      range(1, 15),
    );
    assert.deepEqual(await a.exited, { code: 0, signal: null });
  });

  test('a publish retried through another node with the same msg_id is delivered once', async () => {
    const [a, b] = await cluster(2);
    const room = uniq('dedupe-');
    const p = await startProxy(a.port);
    proxies.add(p);
    const watcher = client({ url: b.ws, token: token(uniq('watcher-')) });
    const got = collect(watcher);
    await watcher.subscribe(room);
    const c = client({ url: p.url, token: token(uniq('grace-')), minReconnectDelay: 20 });
    await connected(c);
    assert.equal(c.node, a.id);
    p.hold();
    const acked = c.publish(room, 'once');
    await eventually(() => got.length === 1, 'the message at the watcher'); // a has it
    p.setTarget(b.port); // the next connection reaches b
    p.drop(); // the ack from a is lost
    p.release();
    const ack = await acked;
    assert.equal(ack.attempts, 2);
    assert.equal(c.node, b.id);
    await deliveredOnce(c, p, ack, got, room, 'once');
  });
});
