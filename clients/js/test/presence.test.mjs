// Presence through real gateway nodes: members, pages and counts (presence, presenceAll,
// presenceStats), refusals, and join / leave events; on one node (memory broker), and across two
// nodes sharing Redis (127.0.0.1:6379, or $GATEWAY_REDIS_ADDR), one of them SIGKILLed.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';

import { Client } from '../dist/index.js';
import { eventually, killAll, nextEvent, redisDropPrefix, rejection, startNode, token, uniq } from './helpers.mjs';

const redis = process.env.GATEWAY_REDIS_ADDR || '127.0.0.1:6379';
const clients = new Set();

function client(url, tok) {
  const c = new Client({ url, token: tok, minReconnectDelay: 20 });
  clients.add(c);
  c.connect();
  return c;
}

/** presenceEvents records the join and leave events of c, in the order they came. */
function presenceEvents(c) {
  const list = [];
  c.on('join', (e) => list.push(e));
  c.on('leave', (e) => list.push(e));
  return list;
}

const show = (events) => JSON.stringify(events.map((e) => `${e.kind} ${e.member.user} ${e.member.session}`));
const sessions = (members) => members.map((m) => m.session);
const sorted = (xs) => [...xs].sort();

afterEach(() => {
  for (const c of clients) c.close();
  clients.clear();
});

after(async () => {
  await killAll();
});

describe('presence with coalescing (the default window, 100ms)', () => {
  let node;
  before(async () => {
    node = await startNode({
      GATEWAY_BROKER: 'memory',
      GATEWAY_PRESENCE_CHANNELS: 'pres-*',
      GATEWAY_PRESENCE_JOIN_LEAVE: 'pres-*',
    });
  });

  test('joins and leaves of a burst reach a subscriber once each, one event per member, and leave it with the right set', async () => {
    const room = uniq('pres-');
    const a = client(node.ws, token(uniq('alice-')));
    const got = presenceEvents(a);
    await a.subscribe(room);
    await eventually(() => got.length === 1, () => `alice's own join, got ${show(got)}`);
    const others = Array.from({ length: 6 }, () => client(node.ws, token(uniq('bob-'))));
    await Promise.all(others.map((c) => c.subscribe(room)));
    const want = sorted(others.map((c) => c.session));
    const joined = () => sorted(got.filter((e) => e.kind === 'join' && e.member.session !== a.session).map((e) => e.member.session));
    await eventually(() => joined().length === others.length, () => `6 joins, got ${show(got)}`);
    assert.deepEqual(joined(), want, 'each member joined once');
    await Promise.all(others.slice(0, 3).map((c) => c.unsubscribe(room)));
    const left = () => sorted(got.filter((e) => e.kind === 'leave').map((e) => e.member.session));
    await eventually(() => left().length === 3, () => `3 leaves, got ${show(got)}`);
    assert.deepEqual(left(), sorted(others.slice(0, 3).map((c) => c.session)), 'each leaver left once');
    // what alice holds now, from her own joins and leaves, is what the node lists
    const online = new Set();
    for (const e of got) e.kind === 'join' ? online.add(e.member.session) : online.delete(e.member.session);
    assert.deepEqual(sorted([...online]), sessions((await a.presenceAll(room)).members));
    for (const c of others) c.close();
  });
});

describe('presence on one node (memory)', () => {
  let node;
  before(async () => {
    node = await startNode({
      GATEWAY_BROKER: 'memory',
      GATEWAY_PRESENCE_CHANNELS: 'pres-*,quiet-*',
      GATEWAY_PRESENCE_JOIN_LEAVE: 'pres-*',
      GATEWAY_PRESENCE_MAX_MEMBERS: '3',
      // one frame per join and leave, so that their order among messages is exact (a window
      // keeps only a connection's last change: see the coalescing suite below)
      GATEWAY_PRESENCE_COALESCE: '0',
    });
  });

  test('presence lists members with their info, in pages; presenceStats counts a user with two tabs once', async () => {
    const room = uniq('pres-');
    const alice = uniq('alice-');
    const bob = uniq('bob-');
    const a1 = client(node.ws, token(alice, { info: { name: 'Alice' } }));
    const a2 = client(node.ws, token(alice, { info: { name: 'Alice' } }));
    const b = client(node.ws, token(bob));
    for (const c of [a1, a2, b]) await c.subscribe(room);
    const watcher = client(node.ws, token(uniq('watcher-'))); // not subscribed: may read all the same

    const all = await watcher.presenceAll(room);
    assert.equal(all.stats, undefined);
    assert.deepEqual(sessions(all.members), sorted([a1.session, a2.session, b.session]), 'ordered by session id');
    const bySession = Object.fromEntries(all.members.map((m) => [m.session, m]));
    assert.deepEqual(bySession[a1.session], { user: alice, session: a1.session, node: node.id, info: { name: 'Alice' } });
    assert.deepEqual(bySession[b.session], { user: bob, session: b.session, node: node.id }, 'no info without one in the token');

    const p1 = await watcher.presence(room, { limit: 2 });
    assert.deepEqual(p1.members, all.members.slice(0, 2));
    assert.equal(p1.next, all.members[1].session);
    const p2 = await watcher.presence(room, { after: p1.next, limit: 2 });
    assert.deepEqual(p2, { channel: room, members: all.members.slice(2) }, 'the last page has no next');
    assert.deepEqual(await watcher.presenceStats(room), { connections: 3, users: 2 });

    // A fourth member is over presence.max_members (3): the counts only.
    await client(node.ws, token(uniq('carol-'))).subscribe(room);
    assert.deepEqual(await watcher.presence(room), { channel: room, members: [], stats: { connections: 4, users: 3 } });
    assert.deepEqual(await watcher.presenceAll(room), { members: [], stats: { connections: 4, users: 3 } });

    a2.close(); // leaving by disconnecting
    await eventually(async () => (await watcher.presenceStats(room)).connections === 3, 'the closed tab gone from the counts');
    assert.deepEqual(await watcher.presenceStats(room), { connections: 3, users: 3 });
  });

  test('join and leave events: own join after subscribed, others in order with messages, leave on unsubscribe and on close', async () => {
    const room = uniq('pres-');
    const a = client(node.ws, token(uniq('alice-')));
    const got = presenceEvents(a);
    const stream = []; // joins, leaves and messages, in the order alice got them
    a.on('join', (e) => stream.push(`join ${e.member.session}`));
    a.on('leave', (e) => stream.push(`leave ${e.member.session}`));
    a.on('message', (m) => stream.push(`message ${m.data}`));
    await a.subscribe(room);
    await eventually(() => got.length === 1, () => `alice's own join, got ${show(got)}`);
    assert.deepEqual(got[0], { channel: room, kind: 'join', member: { user: a.user, session: a.session, node: node.id }, position: got[0].position });

    // Each step waits for the frame before it to reach alice: a join is published after the
    // subscriber's `subscribed`, a leave after `unsubscribed`, so changes of two connections made
    // one right after the other could be in the stream in either order.
    const b = client(node.ws, token(uniq('bob-')));
    await b.subscribe(room);
    await b.publish(room, 'hello'); // after bob's join: his frames are handled in order
    await b.unsubscribe(room);
    await eventually(() => got.length === 3, () => `bob's join and leave, got ${show(got)}`);
    const c = client(node.ws, token(uniq('carol-')));
    await c.subscribe(room);
    const cSession = c.session;
    await eventually(() => got.length === 4, () => `carol's join, got ${show(got)}`);
    c.close();
    await eventually(() => got.length === 5, () => `5 joins and leaves, got ${show(got)}`);
    assert.deepEqual(stream, [
      `join ${a.session}`,
      `join ${b.session}`,
      'message hello',
      `leave ${b.session}`,
      `join ${cSession}`,
      `leave ${cSession}`,
    ]);
    assert.equal(a.position(room), got.at(-1).position, 'a join or leave moves the resume position');
  });

  test('a presence channel without join_leave lists members and sends no join or leave', async () => {
    const room = uniq('quiet-');
    const a = client(node.ws, token(uniq('alice-')));
    const got = presenceEvents(a);
    await a.subscribe(room);
    const b = client(node.ws, token(uniq('bob-')));
    await b.subscribe(room);
    // Listen first: the message can reach a before b's ack does.
    const delivered = nextEvent(a, 'message', (m) => m.channel === room);
    await b.publish(room, 'after bob joined');
    await delivered;
    assert.deepEqual(sorted(sessions((await a.presenceAll(room)).members)), sorted([a.session, b.session]));
    assert.deepEqual(got, [], 'no join or leave on a channel without join_leave');
  });

  test('refusals: forbidden without the right to subscribe, bad_request for a channel without presence', async () => {
    const c = client(node.ws, token(uniq('dan-'), { channels: ['pres-mine'] }));
    await c.presenceStats('pres-mine');
    for (const call of [() => c.presence('pres-theirs'), () => c.presenceStats('pres-theirs'), () => c.presenceAll('pres-theirs')]) {
      const e = await rejection(call());
      assert.equal(e.code, 'forbidden');
    }
    const any = client(node.ws, token(uniq('erin-')));
    const e = await rejection(any.presence('plain-room'));
    assert.equal(e.code, 'bad_request');
    assert.match(e.message, /not a presence channel/);
  });
});

describe('presence across two nodes on redis', () => {
  let prefix;
  let nodes = [];

  afterEach(async (t) => {
    if (t.passed === false || process.env.JS_TEST_LOGS) {
      for (const n of nodes) console.error(`--- logs of node ${n.id}:\n${n.logs.slice(-4000)}`);
    }
    await killAll();
    nodes = [];
    if (prefix) await redisDropPrefix(redis, prefix);
  });

  test('members and joins from both nodes; a leave on close; a SIGKILLed node\'s member leaves once, its tab joins again elsewhere', async () => {
    prefix = uniq('jspresence-');
    for (let i = 0; i < 2; i++) {
      nodes.push(
        await startNode({
          GATEWAY_BROKER: 'redis',
          GATEWAY_REDIS_ADDR: redis,
          GATEWAY_TOPIC_PREFIX: prefix,
          GATEWAY_LOG_LEVEL: 'info',
          GATEWAY_PRESENCE_CHANNELS: 'room-*',
          GATEWAY_PRESENCE_JOIN_LEAVE: 'room-*',
          GATEWAY_PRESENCE_HEARTBEAT: '200ms', // a dead node's members are reaped within about 0.6 s
        }),
      );
    }
    const [na, nb] = nodes;
    const room = uniq('room-');
    const alice = uniq('alice-');
    const bob = uniq('bob-');

    // Each one subscribes once the one before has its own join: a join is published after the
    // subscriber's `subscribed`, so joins of two connections subscribing one right after the
    // other could be in the stream in either order.
    const a = client(na.ws, token(alice));
    const got = presenceEvents(a);
    await a.subscribe(room);
    await eventually(() => got.length === 1, () => `alice's own join, got ${show(got)}`);
    const b = client(nb.ws, token(bob));
    const gotB = presenceEvents(b);
    await b.subscribe(room);
    assert.equal(b.node, nb.id);
    await eventually(() => gotB.length === 1, () => `bob's own join, got ${show(gotB)}`);
    // alice's second tab, on node b, moving to node a when b dies.
    const a2 = client([nb.ws, na.ws], token(alice));
    const got2 = presenceEvents(a2);
    await a2.subscribe(room);
    const a2First = a2.session;
    assert.equal(a2.node, nb.id);
    await eventually(() => got2.length === 1, () => `the second tab's own join, got ${show(got2)}`);

    await eventually(() => got.length === 3, () => `alice's join, bob's and her second tab's, got ${show(got)}`);
    assert.deepEqual(
      got.map((e) => [e.kind, e.member.session, e.member.node]),
      [
        ['join', a.session, na.id],
        ['join', b.session, nb.id],
        ['join', a2First, nb.id],
      ],
    );
    await eventually(() => gotB.length === 2, () => `bob's own join and alice's second tab's, got ${show(gotB)}`);
    assert.deepEqual(
      gotB.map((e) => e.member.session),
      [b.session, a2First],
    );

    // Both nodes list the same members and count alice once.
    const want = sorted([a.session, b.session, a2First]);
    for (const c of [a, b]) {
      assert.deepEqual(sessions((await c.presenceAll(room)).members), want, `the members, asked through ${c.node}`);
      assert.deepEqual(await c.presenceStats(room), { connections: 3, users: 2 }, `the counts, asked through ${c.node}`);
    }

    const bSession = b.session;
    b.close();
    await eventually(() => got.length === 4, () => `bob's leave, got ${show(got)}`);
    assert.deepEqual([got[3].kind, got[3].member.session, got[3].member.user], ['leave', bSession, bob]);

    // Node b dies: alice's second tab was on it. Its member is reaped (a leave, once) and the tab
    // joins again through node a with a new session.
    await nb.kill('SIGKILL');
    await eventually(
      () => got.some((e) => e.kind === 'leave' && e.member.session === a2First) && a2.session !== a2First && got.some((e) => e.kind === 'join' && e.member.session === a2.session),
      () => `the leave of the tab on the dead node and its join on node a, got ${show(got)}`,
      15000,
    );
    assert.equal(a2.node, na.id);
    await eventually(
      async () => (await a.presenceStats(room)).connections === 2,
      '2 connections left (alice\'s two tabs)',
    );
    assert.deepEqual(sessions((await a.presenceAll(room)).members), sorted([a.session, a2.session]));
    assert.deepEqual(await a.presenceStats(room), { connections: 2, users: 1 });
    assert.equal(got.filter((e) => e.kind === 'leave' && e.member.session === a2First).length, 1, 'the reaped member left once');
  });
});
