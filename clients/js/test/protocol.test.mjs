// The client against a scripted fake WebSocket: what a real gateway does not do on demand
// (disconnect with reconnect:false, duplicates at a resume seam, refusals, silent connections).
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';

import { Client, GatewayError, comparePositions, normalizeURL } from '../dist/index.js';
import { collect, eventually, nextEvent, rejection } from './helpers.mjs';

/** A fake server: every `new WebSocket(url)` is a socket the test drives. */
function fakeServer() {
  const server = {
    sockets: [],
    frames: [], // every frame any client sent, parsed
    onFrame: null, // (socket, frame) => void
  };
  server.WebSocket = class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      server.sockets.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error('not open');
      const f = JSON.parse(text);
      this.sent.push(f);
      server.frames.push(f);
      server.onFrame?.(this, f);
    }
    close() {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.({ code: 1000 }));
    }
    // The server's side.
    accept(welcome = {}) {
      this.readyState = 1;
      this.onopen?.({});
      this.push({ type: 'welcome', session: 's' + server.sockets.length, node: 'n1', user: 'u1', ...welcome });
    }
    push(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    drop(code = 1006) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code });
    }
  };
  server.last = () => server.sockets.at(-1);
  server.socket = (n) => eventually(() => server.sockets[n - 1], `connection attempt ${n}`);
  return server;
}

const clients = new Set();
function client(server, opts = {}) {
  const c = new Client({ url: 'ws://gw.test/ws', WebSocket: server.WebSocket, minReconnectDelay: 1, maxReconnectDelay: 5, ...opts });
  clients.add(c);
  return c;
}

// Answers subscribe frames with `subscribed` at the given position, and ping frames.
function answer(server, positions = {}) {
  server.onFrame = (ws, f) => {
    if (f.type === 'subscribe') {
      ws.push({ type: 'subscribed', id: f.id, channel: f.channel, position: positions[f.channel] ?? 'e:0:0:c', recovered: !!f.since });
    } else if (f.type === 'ping' && f.id !== 'keepalive') {
      ws.push({ type: 'pong', id: f.id });
    }
  };
}

afterEach(() => {
  for (const c of clients) c.close();
  clients.clear();
});

describe('protocol details (fake WebSocket)', () => {
  test('uses the WebSocket option, sends the token as ?token=, and tries the URLs in turn', async () => {
    const server = fakeServer();
    let n = 0;
    const c = client(server, { url: ['http://h1.test:81', 'wss://h2.test/base/'], token: () => `t${++n}` });
    c.connect();
    const s1 = await server.socket(1);
    assert.equal(s1.url, 'ws://h1.test:81/ws?token=t1');
    s1.drop();
    const s2 = await server.socket(2);
    assert.equal(s2.url, 'wss://h2.test/base/ws?token=t2');
    s2.drop();
    const s3 = await server.socket(3);
    assert.equal(s3.url, 'ws://h1.test:81/ws?token=t3');
    assert.equal(normalizeURL('https://x.test/a/ws'), 'wss://x.test/a/ws');
    assert.throws(() => new Client({ url: 'ftp://x.test' }), TypeError);
    assert.throws(() => new Client({ url: [], WebSocket: server.WebSocket }), TypeError);
    assert.throws(() => new Client({ url: 'ws://x.test', WebSocket: server.WebSocket, ackTimeout: -1 }), /ackTimeout/);
  });

  test('a disconnect with reconnect:false stops the client', async () => {
    const server = fakeServer();
    const c = client(server, { minReconnectDelay: 0, maxReconnectDelay: 0 });
    c.connect();
    const ws = await server.socket(1);
    ws.accept();
    const pending = c.publish('room', 1); // never acked
    const states = collect(c, 'state');
    const disconnect = nextEvent(c, 'disconnect');
    ws.push({ type: 'disconnect', code: 'policy', reason: 'banned', reconnect: false });
    ws.drop(1008);
    assert.deepEqual(await disconnect, { code: 'policy', reason: 'banned', reconnect: false });
    const err = await rejection(pending);
    assert.ok(err instanceof GatewayError);
    assert.equal(err.code, 'closed');
    assert.deepEqual(states, ['closed']);
    // A reconnect would have been due after 0 ms: a 20 ms timer fires after it would have.
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.sockets.length, 1);
    c.connect();
    assert.equal(server.sockets.length, 1);
  });

  test('a disconnect with reconnect:true and a lost connection both reconnect', async () => {
    const server = fakeServer();
    answer(server);
    const c = client(server);
    const states = collect(c, 'state');
    const disconnects = collect(c, 'disconnect');
    c.connect();
    (await server.socket(1)).accept();
    server.last().push({ type: 'disconnect', code: 'shutdown', reason: 'draining', reconnect: true });
    server.last().drop(1001);
    (await server.socket(2)).accept();
    server.last().drop();
    (await server.socket(3)).accept();
    await c.ping();
    assert.deepEqual(
      disconnects.map((d) => [d.code, d.reconnect]),
      [
        ['shutdown', true],
        ['connection_lost', true],
      ],
    );
    assert.deepEqual(states, ['connecting', 'connected', 'disconnected', 'connecting', 'connected', 'disconnected', 'connecting', 'connected']);
  });

  test('messages already delivered on a channel are dropped (by id and by position)', async () => {
    const server = fakeServer();
    answer(server, { room: 'e:0:0:c' });
    const c = client(server);
    const got = collect(c);
    const subscribed = collect(c, 'subscribed');
    c.connect();
    (await server.socket(1)).accept();
    await c.subscribe('room');
    const msg = (id, lo, data) => ({ type: 'message', channel: 'room', id, position: `e:0:${lo}:c`, data });
    const ws = server.last();
    ws.push(msg('m1', 1, 1));
    ws.push(msg('m1', 1, 1)); // the same again
    ws.push(msg('m0', 0, 0)); // an older position
    ws.push(msg('m2', 2, 2));
    ws.push({ ...msg('m2', 9, 2), position: 'other-epoch:0:9:c' }); // same id, position not comparable
    ws.push({ type: 'message', channel: 'not-subscribed', id: 'x', position: 'e:0:5:c', data: 'x' });
    assert.deepEqual(
      got.map((m) => m.id),
      ['m1', 'm2'],
    );
    // Resume seam: after a reconnect the server replays from `since`, and a message the client
    // saw live may come again.
    ws.drop();
    const ws2 = await server.socket(2);
    ws2.accept();
    await eventually(() => ws2.sent.some((f) => f.type === 'subscribe'), 'the resubscribe');
    const sub = ws2.sent.find((f) => f.type === 'subscribe');
    assert.equal(sub.since, 'other-epoch:0:9:c');
    ws2.push(msg('m2', 2, 2));
    ws2.push(msg('m3', 3, 3));
    assert.deepEqual(
      got.map((m) => m.id),
      ['m1', 'm2', 'm3'],
    );
    assert.deepEqual(
      subscribed.map((s) => s.recovered),
      [false, true],
    );
  });

  test('a resume the server cannot do (bad_request) resubscribes without since', async () => {
    const server = fakeServer();
    const c = client(server);
    server.onFrame = (ws, f) => {
      if (f.type !== 'subscribe') return;
      if (f.since) ws.push({ type: 'error', id: f.id, code: 'bad_request', message: 'bad since' });
      else ws.push({ type: 'subscribed', id: f.id, channel: f.channel, position: 'e:0:7:c', recovered: false });
    };
    c.connect();
    (await server.socket(1)).accept();
    await c.subscribe('room');
    server.last().push({ type: 'message', channel: 'room', id: 'm8', position: 'e:0:8:c', data: 8 });
    const again = nextEvent(c, 'subscribed');
    server.last().drop();
    (await server.socket(2)).accept();
    assert.deepEqual(await again, { channel: 'room', position: 'e:0:7:c', recovered: false });
    assert.deepEqual(
      server.last().sent.map((f) => [f.type, f.since]),
      [
        ['subscribe', 'e:0:8:c'],
        ['subscribe', undefined],
      ],
    );
  });

  test('a refused resubscribe ends the subscription with an error event', async () => {
    const server = fakeServer();
    let refuse = false;
    server.onFrame = (ws, f) => {
      if (f.type !== 'subscribe') return;
      if (refuse) ws.push({ type: 'error', id: f.id, code: 'forbidden', message: 'not any more' });
      else ws.push({ type: 'subscribed', id: f.id, channel: f.channel, position: 'e:0:1:c', recovered: false });
    };
    const c = client(server);
    c.connect();
    (await server.socket(1)).accept();
    await c.subscribe('room');
    refuse = true;
    const error = nextEvent(c, 'error');
    server.last().drop();
    (await server.socket(2)).accept();
    const e = await error;
    assert.ok(e instanceof GatewayError);
    assert.equal(e.code, 'forbidden');
    assert.equal(c.position('room'), undefined);
    assert.equal((await rejection(c.unsubscribe('room'))).code, 'not_found');
  });

  test('a publish never acked rejects with timeout after maxAttempts attempts of one msg_id', async () => {
    const server = fakeServer();
    const c = client(server, { ackTimeout: 15, maxAttempts: 3 });
    c.connect();
    (await server.socket(1)).accept();
    const err = await rejection(c.publish('room', { a: 1 }));
    assert.ok(err instanceof GatewayError);
    assert.equal(err.code, 'timeout');
    const pubs = server.frames.filter((f) => f.type === 'publish');
    assert.equal(pubs.length, 3);
    assert.equal(new Set(pubs.map((f) => f.msg_id)).size, 1);
    assert.equal(new Set(pubs.map((f) => f.id)).size, 3);
    assert.deepEqual(pubs[0].data, { a: 1 });
  });

  test('unavailable is retried, forbidden is not; a late ack of an earlier attempt counts', async () => {
    const server = fakeServer();
    const c = client(server, { ackTimeout: 1000, maxAttempts: 4 });
    let n = 0;
    server.onFrame = (ws, f) => {
      if (f.type !== 'publish') return;
      n++;
      if (f.channel === 'busy' && n === 1) ws.push({ type: 'error', id: f.id, code: 'unavailable', message: 'broker slow' });
      else if (f.channel === 'busy') ws.push({ type: 'ack', id: f.id, msg_id: f.msg_id });
      else ws.push({ type: 'error', id: f.id, code: 'forbidden', message: 'no' });
    };
    c.connect();
    (await server.socket(1)).accept();
    const ack = await c.publish('busy', 1);
    assert.equal(ack.attempts, 2);
    n = 0;
    assert.equal((await rejection(c.publish('closed-room', 1))).code, 'forbidden');
    assert.equal(n, 1);

    // The first attempt times out, the second is sent; then the ack of the first arrives.
    const held = [];
    server.onFrame = (ws, f) => f.type === 'send' && held.push(f);
    const slow = new Client({ url: 'ws://gw.test/ws', WebSocket: server.WebSocket, ackTimeout: 20 });
    clients.add(slow);
    slow.connect();
    const ws = await server.socket(2);
    ws.accept();
    const p = slow.send('x');
    await eventually(() => held.length === 2, 'a second attempt');
    ws.push({ type: 'ack', id: held[0].id, msg_id: held[0].msg_id });
    assert.deepEqual(await p, { msg_id: held[0].msg_id, attempts: 2 });
  });

  test('no welcome in time, or no answer to the keepalive ping: the connection is replaced', async () => {
    const server = fakeServer();
    const c = client(server, { handshakeTimeout: 20, pingInterval: 10, ackTimeout: 20 });
    const disconnects = collect(c, 'disconnect');
    c.connect();
    const s1 = await server.socket(1);
    s1.readyState = 1;
    s1.onopen?.({}); // open, but silent
    const s2 = await server.socket(2);
    assert.equal(s1.readyState, 3, 'the silent connection was closed');
    s2.accept(); // then silent: the keepalive ping is not answered
    await eventually(() => s2.sent.some((f) => f.type === 'ping' && f.id === 'keepalive'), 'a keepalive ping');
    await server.socket(3);
    assert.equal(s2.readyState, 3);
    assert.deepEqual(
      disconnects.map((d) => d.code),
      ['connect_failed', 'connection_lost'],
    );
    assert.match(disconnects[1].reason, /ping/);
  });

  test('messages addressed to the session or to all are direct events; base64 payloads say so', async () => {
    const server = fakeServer();
    answer(server);
    const c = client(server);
    const direct = collect(c, 'direct');
    const got = collect(c);
    c.connect();
    (await server.socket(1)).accept();
    await c.subscribe('bin');
    const ws = server.last();
    ws.push({ type: 'message', to: 'session', id: 'd1', data: { hi: 1 } });
    ws.push({ type: 'message', to: 'all', id: 'd2', data: 'AAE=', encoding: 'base64' });
    ws.push({ type: 'message', channel: 'bin', id: 'b1', position: 'e:0:1:c', data: 'AAE=', encoding: 'base64' });
    assert.deepEqual(direct, [
      { to: 'session', id: 'd1', data: { hi: 1 } },
      { to: 'all', id: 'd2', data: 'AAE=', encoding: 'base64' },
    ]);
    assert.deepEqual(got, [{ channel: 'bin', id: 'b1', position: 'e:0:1:c', data: 'AAE=', encoding: 'base64' }]);
  });

  test('join and leave frames: one event per member, in order, a coalesced `members` frame too; repeats at a resume seam dropped', async () => {
    const server = fakeServer();
    answer(server, { room: 'e:0:1:c' });
    const c = client(server);
    const got = [];
    c.on('join', (e) => got.push(e));
    c.on('leave', (e) => got.push(e));
    const messages = collect(c);
    c.connect();
    (await server.socket(1)).accept();
    await c.subscribe('room');
    const ws = server.last();
    const m = (n) => ({ user: `u${n}`, session: `s${n}`, node: 'n1' });
    ws.push({ type: 'join', channel: 'room', member: { ...m(1), info: { name: 'One' } }, position: 'e:0:2:c' });
    ws.push({ type: 'message', channel: 'room', id: 'x', position: 'e:0:3:c', data: 'hi' });
    ws.push({ type: 'join', channel: 'room', members: [m(2), m(3), m(4)], position: 'e:0:4:c' });
    ws.push({ type: 'leave', channel: 'room', members: [m(3), m(1)], position: 'e:0:5:c' });
    ws.push({ type: 'leave', channel: 'room', member: m(2), position: 'e:0:6:c' });
    ws.push({ type: 'join', channel: 'other', member: m(9), position: 'e:0:7:c' }); // not subscribed
    ws.push({ type: 'join', channel: 'room', members: [], position: 'e:0:7:c' }); // nothing in it
    const show = () => got.map((e) => `${e.kind} ${e.member.session} ${e.position}`);
    assert.deepEqual(show(), [
      'join s1 e:0:2:c',
      'join s2 e:0:4:c',
      'join s3 e:0:4:c',
      'join s4 e:0:4:c',
      'leave s3 e:0:5:c',
      'leave s1 e:0:5:c',
      'leave s2 e:0:6:c',
    ]);
    assert.deepEqual(got[0], { channel: 'room', kind: 'join', member: { user: 'u1', session: 's1', node: 'n1', info: { name: 'One' } }, position: 'e:0:2:c' });
    assert.deepEqual(messages.map((x) => x.id), ['x']);
    assert.equal(c.position('room'), 'e:0:6:c', 'a join or leave moves the position a resume starts after');

    // The resume asks from the last join or leave, and a frame replayed twice is delivered once.
    ws.drop();
    const ws2 = await server.socket(2);
    ws2.accept();
    const again = await eventually(() => ws2.sent.find((f) => f.type === 'subscribe'), 'the resubscription');
    assert.equal(again.since, 'e:0:6:c');
    ws2.push({ type: 'leave', channel: 'room', member: m(2), position: 'e:0:6:c' });
    ws2.push({ type: 'leave', channel: 'room', members: [m(4)], position: 'e:0:8:c' });
    assert.deepEqual(show().slice(7), ['leave s4 e:0:8:c']);
  });

  test('presence, presenceAll and presenceStats: frames sent, pages and counts read, refusals', async () => {
    const server = fakeServer();
    const members = Array.from({ length: 5 }, (_, i) => ({ user: `u${i}`, session: `s${i}`, node: 'n1' }));
    const asked = [];
    let overCap = false;
    server.onFrame = (ws, f) => {
      if (f.type === 'presence') {
        asked.push({ after: f.after, limit: f.limit });
        if (f.channel === 'nope') return ws.push({ type: 'error', id: f.id, code: 'forbidden', message: 'not yours' });
        if (overCap) return ws.push({ type: 'presence', id: f.id, channel: f.channel, connections: 12000, users: 11000 });
        const from = f.after ? members.findIndex((m) => m.session === f.after) + 1 : 0;
        const page = members.slice(from, from + 2); // the fake's page is 2, whatever the limit
        const reply = { type: 'presence', id: f.id, channel: f.channel, members: page };
        if (from + 2 < members.length) reply.next = page.at(-1).session;
        ws.push(reply);
      } else if (f.type === 'presence_stats') {
        ws.push({ type: 'presence_stats', id: f.id, channel: f.channel, connections: 5, users: 4 });
      }
    };
    const c = client(server);
    c.connect();
    (await server.socket(1)).accept();

    const first = await c.presence('room', { limit: 2 });
    assert.deepEqual(first, { channel: 'room', members: members.slice(0, 2), next: 's1' });
    const last = await c.presence('room', { after: 's3' });
    assert.deepEqual(last, { channel: 'room', members: [members[4]] });
    assert.deepEqual(asked, [{ after: undefined, limit: 2 }, { after: 's3', limit: undefined }]);
    asked.length = 0;
    assert.deepEqual(await c.presenceAll('room'), { members });
    assert.deepEqual(asked, [
      { after: undefined, limit: 1000 },
      { after: 's1', limit: 1000 },
      { after: 's3', limit: 1000 },
    ]);
    assert.deepEqual(await c.presenceStats('room'), { connections: 5, users: 4 });
    overCap = true;
    assert.deepEqual(await c.presence('room'), { channel: 'room', members: [], stats: { connections: 12000, users: 11000 } });
    assert.deepEqual(await c.presenceAll('room'), { members: [], stats: { connections: 12000, users: 11000 } });

    const forbidden = await rejection(c.presence('nope'));
    assert.equal(forbidden.code, 'forbidden');
    const sent = server.frames.length;
    for (const [p, why] of [
      [c.presence('room', { limit: 0 }), 'limit 0'],
      [c.presence('room', { limit: 1001 }), 'limit 1001'],
      [c.presence('$user'), '$user'],
      [c.presenceStats('bad channel'), 'a bad name'],
    ]) {
      const e = await rejection(p);
      assert.equal(e.code, 'bad_request', why);
    }
    assert.equal(server.frames.length, sent, 'refused before anything was sent');
  });

  test('a presence query answered unavailable is sent again, then rejects with unavailable', async () => {
    const server = fakeServer();
    server.onFrame = (ws, f) => {
      if (f.type === 'presence_stats') ws.push({ type: 'error', id: f.id, code: 'unavailable', message: 'this broker keeps no presence yet' });
    };
    const c = client(server, { maxAttempts: 3 });
    c.connect();
    (await server.socket(1)).accept();
    const e = await rejection(c.presenceStats('room'));
    assert.ok(e instanceof GatewayError);
    assert.equal(e.code, 'unavailable');
    assert.match(e.message, /keeps no presence/);
    assert.equal(server.frames.filter((f) => f.type === 'presence_stats').length, 3);
  });

  test('positions compare within one epoch and channel only', () => {
    assert.equal(comparePositions('e:1:2:c', 'e:1:3:c'), -1);
    assert.equal(comparePositions('e:2:0:c', 'e:1:9:c'), 1);
    assert.equal(comparePositions('e:18446744073709551615:0:c', 'e:18446744073709551614:9:c'), 1);
    assert.equal(comparePositions('e:1:2:c', 'e:1:2:c'), 0);
    assert.equal(comparePositions('e:1:2:c', 'f:1:2:c'), undefined);
    assert.equal(comparePositions('e:1:2:c', 'e:1:2:d'), undefined);
    assert.equal(comparePositions('17-3', 'e:1:2:c'), undefined);
    assert.equal(comparePositions('e:x:2:c', 'e:1:2:c'), undefined);
  });
});

describe('rpc, refresh and hook data (fake WebSocket)', () => {
  test('rpc resolves with the result data; the data is sent as given, or not at all', async () => {
    const server = fakeServer();
    server.onFrame = (ws, f) => {
      if (f.type === 'rpc' && f.method === 'rooms.list') ws.push({ type: 'rpc_result', id: f.id, data: { rooms: ['a', 'b'], got: f.data } });
      else if (f.type === 'rpc') ws.push({ type: 'rpc_result', id: f.id });
    };
    const c = client(server);
    c.connect();
    (await server.socket(1)).accept();
    assert.deepEqual(await c.rpc('rooms.list', { page: 2 }), { rooms: ['a', 'b'], got: { page: 2 } });
    assert.equal(await c.rpc('ping.backend'), undefined);
    const rpcs = server.frames.filter((f) => f.type === 'rpc');
    assert.equal(rpcs.length, 2);
    assert.equal(rpcs[1].method, 'ping.backend');
    assert.ok(!('data' in rpcs[1]), 'an rpc without data sends no data field');
  });

  test('an rpc refused rejects with the code, once, whatever the code', async () => {
    const server = fakeServer();
    server.onFrame = (ws, f) => {
      if (f.type === 'rpc') ws.push({ type: 'error', id: f.id, code: f.method, message: `no ${f.method}` });
    };
    const c = client(server, { maxAttempts: 5 });
    c.connect();
    (await server.socket(1)).accept();
    for (const code of ['not_member', 'unavailable', 'not_found', 'rate_limited']) {
      const e = await rejection(c.rpc(code, 1));
      assert.ok(e instanceof GatewayError);
      assert.equal(e.code, code);
      assert.match(e.message, new RegExp(`no ${code}`));
    }
    assert.deepEqual(
      server.frames.map((f) => f.method),
      ['not_member', 'unavailable', 'not_found', 'rate_limited'],
      'a refused rpc is not sent again',
    );
    // Refused before anything is sent.
    const sent = server.frames.length;
    assert.equal((await rejection(c.rpc('', 1))).code, 'bad_request');
    assert.equal((await rejection(c.rpc('m', 1n))).code, 'bad_request');
    assert.equal((await rejection(c.rpc('m', 'x'.repeat(70 << 10)))).code, 'too_large');
    assert.equal((await rejection(c.rpc('m', 1, { timeout: -1 }))).code, 'bad_request');
    assert.equal(server.frames.length, sent);
  });

  test('an rpc times out by its timeout, counted from the call; a late result is dropped', async () => {
    const server = fakeServer();
    const c = client(server, { ackTimeout: 60_000 });
    // Not connected yet: the call waits for the connection within its timeout.
    let e = await rejection(c.rpc('early', 1, { timeout: 20 }));
    assert.equal(e.code, 'timeout');
    c.connect();
    (await server.socket(1)).accept();
    assert.equal(server.frames.filter((f) => f.type === 'rpc').length, 0, 'a call that timed out is not sent later');
    e = await rejection(c.rpc('slow', 1, { timeout: 20 }));
    assert.ok(e instanceof GatewayError);
    assert.equal(e.code, 'timeout');
    const slow = server.frames.find((f) => f.method === 'slow');
    server.onFrame = (ws, f) => {
      if (f.type === 'rpc') ws.push({ type: 'rpc_result', id: f.id, data: 'mine' });
    };
    const errors = collect(c, 'error');
    server.last().push({ type: 'rpc_result', id: slow.id, data: 'late' });
    assert.equal(await c.rpc('next', 1), 'mine');
    assert.deepEqual(errors, []);
  });

  test('concurrent rpcs each get the result of their own id', async () => {
    const server = fakeServer();
    const held = [];
    server.onFrame = (ws, f) => {
      if (f.type === 'rpc') held.push([ws, f]);
    };
    const c = client(server);
    c.connect();
    (await server.socket(1)).accept();
    const calls = Array.from({ length: 20 }, (_, i) => c.rpc(`m${i}`, i));
    await eventually(() => held.length === 20, 'the 20 rpc frames');
    assert.equal(new Set(held.map(([, f]) => f.id)).size, 20);
    for (const [ws, f] of held.reverse()) ws.push({ type: 'rpc_result', id: f.id, data: { method: f.method, data: f.data } });
    const results = await Promise.all(calls);
    results.forEach((r, i) => assert.deepEqual(r, { method: `m${i}`, data: i }));
  });

  test('an rpc cut by a lost connection rejects with unavailable and is not sent again', async () => {
    const server = fakeServer();
    answer(server);
    const c = client(server);
    c.connect();
    (await server.socket(1)).accept();
    const p = c.rpc('charge', { cents: 100 });
    server.last().drop();
    const e = await rejection(p);
    assert.equal(e.code, 'unavailable');
    (await server.socket(2)).accept();
    await c.ping();
    assert.deepEqual(
      server.last().sent.map((f) => f.type),
      ['ping'],
    );
    assert.equal(server.frames.filter((f) => f.type === 'rpc').length, 1);
  });

  test('refresh sends the token (or none), resolves with expires; an accepted token is used on every reconnect', async () => {
    const server = fakeServer();
    server.onFrame = (ws, f) => {
      if (f.type !== 'refresh') return;
      if (f.token === 't-bad') ws.push({ type: 'error', id: f.id, code: 'unauthorized', message: 'token expired' });
      else ws.push({ type: 'refreshed', id: f.id, expires: f.token ? 1900000000 : 0 });
    };
    const c = client(server, { token: 't1' });
    c.connect();
    const s1 = await server.socket(1);
    assert.match(s1.url, /token=t1$/);
    s1.accept();
    assert.equal(await c.refresh('t2'), 1900000000);
    assert.equal(await c.refresh(), 0);
    const e = await rejection(c.refresh('t-bad'));
    assert.ok(e instanceof GatewayError);
    assert.equal(e.code, 'unauthorized');
    assert.deepEqual(
      s1.sent.map((f) => f.token),
      ['t2', undefined, 't-bad'],
    );
    assert.ok(!('token' in s1.sent[1]), 'a refresh without a token sends no token field');
    s1.drop();
    const s2 = await server.socket(2);
    assert.match(s2.url, /token=t2$/);
    s2.accept();
    s2.drop();
    assert.match((await server.socket(3)).url, /token=t2$/);
  });

  test('with a token function, a refreshed token is used on the next attempt, the function after it', async () => {
    const server = fakeServer();
    server.onFrame = (ws, f) => {
      if (f.type === 'refresh') ws.push({ type: 'refreshed', id: f.id, expires: 1900000000 });
    };
    let n = 0;
    const c = client(server, { token: () => `f${++n}` });
    c.connect();
    const s1 = await server.socket(1);
    assert.match(s1.url, /token=f1$/);
    s1.accept();
    assert.equal(await c.refresh('r1'), 1900000000);
    s1.drop();
    const s2 = await server.socket(2);
    assert.match(s2.url, /token=r1$/);
    assert.equal(n, 1);
    s2.accept();
    s2.drop();
    assert.match((await server.socket(3)).url, /token=f2$/);
  });

  test('refresh times out by its timeout and a token it did not get accepted is not kept', async () => {
    const server = fakeServer();
    const c = client(server, { token: 't1' });
    c.connect();
    (await server.socket(1)).accept();
    assert.equal((await rejection(c.refresh('t2', { timeout: 20 }))).code, 'timeout');
    const p = c.refresh('t3');
    server.last().drop();
    assert.equal((await rejection(p)).code, 'unavailable');
    assert.match((await server.socket(2)).url, /token=t1$/);
  });

  test('welcome data, and subscribed data and expires, from the hooks', async () => {
    const server = fakeServer();
    let roomData = { topic: 'hi' };
    server.onFrame = (ws, f) => {
      if (f.type !== 'subscribe') return;
      const r = { type: 'subscribed', id: f.id, channel: f.channel, position: 'e:0:0:c', recovered: !!f.since };
      if (f.channel === 'room') Object.assign(r, { data: roomData, expires: 1900000000 });
      ws.push(r);
    };
    const c = client(server);
    const welcome = nextEvent(c, 'welcome');
    c.connect();
    (await server.socket(1)).accept({ data: { plan: 'pro' } });
    assert.deepEqual((await welcome).data, { plan: 'pro' });
    assert.deepEqual(c.welcomeData, { plan: 'pro' });
    assert.deepEqual(await c.subscribe('room'), {
      channel: 'room',
      position: 'e:0:0:c',
      recovered: false,
      data: { topic: 'hi' },
      expires: 1900000000,
    });
    assert.deepEqual(await c.subscribe('plain'), { channel: 'plain', position: 'e:0:0:c', recovered: false });
    // A resubscription asks the hook again: the event carries its new answer.
    roomData = { topic: 'new' };
    const again = nextEvent(c, 'subscribed', (s) => s.channel === 'room');
    server.last().drop();
    (await server.socket(2)).accept();
    assert.deepEqual((await again).data, { topic: 'new' });
    assert.equal(c.welcomeData, undefined);
  });

  test('an unsubscribed the server sends on its own ends the subscription with an event; it is not renewed', async () => {
    const server = fakeServer();
    answer(server);
    const c = client(server);
    c.connect();
    (await server.socket(1)).accept();
    for (const ch of ['a', 'b', 'c']) await c.subscribe(ch);
    const events = collect(c, 'unsubscribed');
    const messages = collect(c, 'message');
    const ws = server.last();
    ws.push({ type: 'unsubscribed', channel: 'a', reason: 'expired' });
    ws.push({ type: 'unsubscribed', channel: 'b' });
    ws.push({ type: 'unsubscribed', channel: 'nope', reason: 'expired' }); // not subscribed: no event
    ws.push({ type: 'message', channel: 'a', id: 'x', position: 'e:0:1:c', data: 'after' });
    ws.push({ type: 'message', channel: 'c', id: 'y', position: 'e:0:1:c', data: 'still here' });
    assert.deepEqual(events, [
      { channel: 'a', reason: 'expired' },
      { channel: 'b', reason: '' },
    ]);
    assert.deepEqual(
      messages.map((m) => m.data),
      ['still here'],
    );
    assert.equal(c.position('a'), undefined);
    assert.equal((await rejection(c.unsubscribe('a'))).code, 'not_found');
    ws.drop();
    (await server.socket(2)).accept();
    await eventually(() => server.last().sent.length >= 1, 'the resubscription');
    assert.deepEqual(
      server.last().sent.map((f) => [f.type, f.channel]),
      [['subscribe', 'c']],
    );
    await c.subscribe('a'); // the application may subscribe again
  });
});
