// Server-Sent Events against two real gateway nodes sharing a broker (Redis on 127.0.0.1:6379, or
// $GATEWAY_REDIS_ADDR, by default; SSE_TEST_BROKER below): the npm `eventsource` package resuming
// with its own Last-Event-ID after a SIGKILL, and the client's SSE fallback when the WebSocket
// upgrade fails.
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';

import { EventSource } from 'eventsource';

import { Client, GatewayError, eventID, sseURL } from '../dist/index.js';
import { apiPublish, collect, eventually, jetstreamDropPrefix, killAll, nextEvent, redisDropPrefix, startNode, startProxy, token, uniq } from './helpers.mjs';

const redis = process.env.GATEWAY_REDIS_ADDR || '127.0.0.1:6379';
// The broker: SSE_TEST_BROKER=redis (the default), jetstream (NATS on 127.0.0.1:4222, or
// $GATEWAY_NATS_URL; the streams of the test's prefix are deleted after each test), kafka (the
// brokers in $GATEWAY_KAFKA_BROKERS: scripts/test-js.sh starts internal/kfakeserver) or nats (no
// history: the resume says recovered:false). scripts/test-js.sh runs this file on each.
const broker = process.env.SSE_TEST_BROKER || 'redis';
const natsURL = process.env.GATEWAY_NATS_URL || 'nats://127.0.0.1:4222';
if (broker === 'kafka' && !process.env.GATEWAY_KAFKA_BROKERS) throw new Error('SSE_TEST_BROKER=kafka needs GATEWAY_KAFKA_BROKERS');
const closers = new Set();
let running = [];
const prefixes = [];

async function cluster(n) {
  const prefix = uniq('jssse-');
  prefixes.push(prefix);
  const nodes = [];
  running = nodes;
  for (let i = 0; i < n; i++) {
    nodes.push(
      await startNode({
        GATEWAY_BROKER: broker,
        GATEWAY_REDIS_ADDR: redis,
        GATEWAY_NATS_URL: natsURL,
        GATEWAY_KAFKA_BROKERS: process.env.GATEWAY_KAFKA_BROKERS || '127.0.0.1:9092',
        GATEWAY_KAFKA_PARTITIONS: '4',
        GATEWAY_JETSTREAM_MAX_AGE: '1m',
        GATEWAY_JETSTREAM_MAX_BYTES: '1048576',
        GATEWAY_TOPIC_PREFIX: prefix,
      }),
    );
  }
  return nodes;
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

afterEach(async (t) => {
  if (t.passed === false || process.env.JS_TEST_LOGS) {
    for (const n of running) console.error(`--- logs of node ${n.id}:\n${n.logs.slice(-4000)}`);
  }
  running = [];
  for (const c of closers) await c();
  closers.clear();
  await killAll();
  for (const p of prefixes.splice(0)) {
    if (broker === 'redis') await redisDropPrefix(redis, p);
    if (broker === 'jetstream') await jetstreamDropPrefix(natsURL, p);
  }
});

after(async () => {
  await killAll();
});

describe(`Server-Sent Events on two nodes on ${broker}`, () => {
  test('EventSource resumes with its own Last-Event-ID on another node after a SIGKILL: every message once', async () => {
    const [a, b] = await cluster(2);
    const lb = await startProxy(a.port); // the load balancer in front of both nodes
    closers.add(() => lb.close());
    const room = uniq('sse-');
    const user = uniq('sue-');
    const q = new URLSearchParams([['channel', room], ['channel', '$user'], ['token', token(user)]]);
    const es = new EventSource(`http://127.0.0.1:${lb.port}/sse?${q}`);
    closers.add(() => es.close());
    const frames = [];
    es.onmessage = (e) => frames.push(JSON.parse(e.data));
    const of = (type) => frames.filter((f) => f.type === type);
    await eventually(() => of('subscribed').length === 2, 'two subscribed events');

    for (const i of range(1, 5)) await apiPublish(b, { channel: room, data: i });
    await apiPublish(b, { user, data: 'u1' });
    await eventually(() => of('message').length === 6, () => `six messages, got ${JSON.stringify(of('message'))}`);

    await a.kill('SIGKILL');
    lb.setTarget(b.port);
    for (const i of range(6, 10)) await apiPublish(b, { channel: room, data: i });
    await apiPublish(b, { user, data: 'u2' });
    // EventSource reconnects by itself (the stream's retry: 1 s), to b, with Last-Event-ID.
    await eventually(() => of('subscribed').length === 4, 'the two subscribed events of the resume', 15000);
    for (const i of range(11, 12)) await apiPublish(b, { channel: room, data: i });
    if (broker === 'nats') {
      // No history: nothing replayed, and the resume says so.
      await eventually(() => of('message').length === 8, () => `8 messages, got ${JSON.stringify(of('message'))}`);
      assert.deepEqual(of('message').filter((m) => m.channel === room).map((m) => m.data), [...range(1, 5), 11, 12]);
      assert.deepEqual(of('subscribed').slice(2).map((s) => [s.channel, s.recovered]), [[room, false], ['$user', false]]);
      return;
    }
    await eventually(() => of('message').length === 14, () => `14 messages, got ${JSON.stringify(of('message'))}`);

    const msgs = of('message');
    assert.deepEqual(msgs.filter((m) => m.channel === room).map((m) => m.data), range(1, 12));
    assert.deepEqual(msgs.filter((m) => m.channel === '$user').map((m) => m.data), ['u1', 'u2']);
    assert.equal(new Set(msgs.map((m) => m.id)).size, msgs.length, 'no message twice');
    assert.deepEqual(of('subscribed').slice(2).map((s) => [s.channel, s.recovered]), [[room, true], ['$user', true]]);
    assert.equal(of('welcome')[1].node, b.id);
  });

  const noHistory = broker === 'nats' && 'core NATS keeps no history to resume from';
  test('the client falls back to SSE when the WebSocket fails, resumes on another node, and refuses to publish', { skip: noHistory }, async () => {
    const [a, b] = await cluster(2);
    let node = a;
    // A WebSocket a proxy blocks: every attempt errors.
    class BlockedWebSocket {
      readyState = 0;
      onopen = null;
      onmessage = null;
      onclose = null;
      onerror = null;
      constructor() {
        setTimeout(() => this.onerror?.({}), 1);
      }
      send() {}
      close() {}
    }
    const user = uniq('tom-');
    const room = uniq('fb-');
    const c = new Client({
      url: () => node.ws,
      token: token(user),
      transports: ['websocket', 'sse'],
      WebSocket: BlockedWebSocket,
      EventSource,
      minReconnectDelay: 20,
    });
    closers.add(() => c.close());
    c.connect();
    await nextEvent(c, 'state', (s) => s === 'connected');
    assert.equal(c.transport, 'sse');
    const got = collect(c);
    const subscribed = collect(c, 'subscribed');
    await c.subscribe(room); // the stream reconnects with the channel
    await c.subscribe('$user');
    for (const i of range(1, 5)) await apiPublish(b, { channel: room, data: i });
    await apiPublish(b, { user, data: 'u1' });
    await eventually(() => got.length === 6, () => `six messages, got ${JSON.stringify(got)}`);
    const refused = await c.publish(room, 'x').then(
      () => assert.fail('publish over SSE resolved'),
      (e) => e,
    );
    assert.ok(refused instanceof GatewayError && refused.code === 'bad_request', String(refused));

    const lost = nextEvent(c, 'disconnect');
    await a.kill('SIGKILL');
    node = b;
    await lost;
    for (const i of range(6, 10)) await apiPublish(b, { channel: room, data: i });
    await apiPublish(b, { user, data: 'u2' });
    await eventually(() => got.length === 12, () => `12 messages, got ${JSON.stringify(got)}`, 15000);
    assert.equal(c.node, b.id);
    assert.equal(c.transport, 'sse');
    assert.deepEqual(got.filter((m) => m.channel === room).map((m) => m.data), range(1, 10));
    assert.deepEqual(got.filter((m) => m.channel === '$user').map((m) => m.data), ['u1', 'u2']);
    assert.equal(new Set(got.map((m) => m.id)).size, got.length, 'no message twice');
    assert.deepEqual(subscribed.slice(-2).map((s) => [s.channel, s.recovered]).sort(), [['$user', true], [room, true]].sort());
  });
});

// A scripted EventSource: the test plays the server.
class FakeEventSource {
  static all = [];
  readyState = 0;
  onopen = null;
  onmessage = null;
  onerror = null;
  constructor(url) {
    this.url = new URL(url);
    FakeEventSource.all.push(this);
  }
  emit(frame) {
    this.readyState = 1;
    this.onmessage?.({ data: JSON.stringify(frame), lastEventId: '' });
  }
  close() {
    this.readyState = 2;
  }
}

describe('the sse transport, against a scripted EventSource', () => {
  test('sseURL and eventID', () => {
    assert.equal(
      sseURL('wss://gw.example/base/ws?token=t', ['a', '$user'], '1.p..q'),
      'https://gw.example/base/sse?token=t&channel=a&channel=%24user&last_event_id=1.p..q',
    );
    assert.equal(eventID(['', '']), '');
    assert.equal(eventID(['e:0:1:x', '']), '1.e:0:1:x.');
  });

  test('subscribe reconnects the stream with the channel and resumes from the positions; publish is refused', async () => {
    FakeEventSource.all = [];
    const c = new Client({ url: 'ws://gw.test/ws', token: 'tok', transports: ['sse'], EventSource: FakeEventSource, minReconnectDelay: 1, pingInterval: 0 });
    closers.add(() => c.close());
    c.connect();
    await eventually(() => FakeEventSource.all.length === 1, 'the first stream');
    let es = FakeEventSource.all[0];
    assert.equal(es.url.pathname, '/sse');
    assert.deepEqual(es.url.searchParams.getAll('channel'), []);
    assert.equal(es.url.searchParams.get('token'), 'tok');
    es.emit({ type: 'welcome', session: 's1', node: 'n1', user: 'u' });
    assert.equal(c.state, 'connected');
    const sub = c.subscribe('a');
    await eventually(() => FakeEventSource.all.length === 2, 'a stream with channel a');
    es = FakeEventSource.all[1];
    assert.deepEqual(es.url.searchParams.getAll('channel'), ['a']);
    assert.equal(es.url.searchParams.get('last_event_id'), null);
    es.emit({ type: 'welcome', session: 's2', node: 'n1', user: 'u' });
    es.emit({ type: 'subscribed', id: '1', channel: 'a', position: 'e:0:4:x', recovered: false });
    assert.deepEqual(await sub, { channel: 'a', position: 'e:0:4:x', recovered: false });
    const got = collect(c);
    es.emit({ type: 'message', channel: 'a', id: 'm5', position: 'e:0:5:x', data: 5 });
    assert.deepEqual(got.map((m) => m.data), [5]);
    const e = await c.publish('a', 1).then(() => assert.fail('published over SSE'), (err) => err);
    assert.equal(e.code, 'bad_request');
    await c.ping(); // answered by the client itself
    // The stream breaks: the next one resumes a from its last position.
    es.onerror?.({});
    await eventually(() => FakeEventSource.all.length === 3, 'the stream after the break');
    es = FakeEventSource.all[2];
    assert.deepEqual(es.url.searchParams.getAll('channel'), ['a']);
    assert.equal(es.url.searchParams.get('last_event_id'), '1.e:0:5:x');
    es.emit({ type: 'welcome', session: 's3', node: 'n2', user: 'u' });
    es.emit({ type: 'message', channel: 'a', id: 'm5', position: 'e:0:5:x', data: 5 }); // a repeat at the seam
    es.emit({ type: 'message', channel: 'a', id: 'm6', position: 'e:0:6:x', data: 6 });
    es.emit({ type: 'subscribed', id: '1', channel: 'a', position: 'e:0:6:x', recovered: true });
    assert.deepEqual(got.map((m) => m.data), [5, 6]);
  });
});
