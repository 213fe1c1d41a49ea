// History through a real gateway node (memory broker): history() pages both ways, acks carry
// positions, subscribe's rewind delivers the newest messages before the live ones, and a channel
// the token does not allow is refused.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';

import { Client } from '../dist/index.js';
import { collect, eventually, killAll, rejection, startNode, token, uniq } from './helpers.mjs';

let node;
const clients = new Set();

function client(tok) {
  const c = new Client({ url: node.ws, token: tok, minReconnectDelay: 20 });
  clients.add(c);
  c.connect();
  return c;
}

before(async () => {
  node = await startNode({ GATEWAY_BROKER: 'memory' });
});

afterEach(() => {
  for (const c of clients) c.close();
  clients.clear();
});

after(async () => {
  await killAll();
});

describe('history', () => {
  test('history() pages forwards and backwards; acks carry the positions', async () => {
    const room = uniq('hist-');
    const c = client(token(uniq('alice-')));
    const acks = [];
    for (let i = 0; i < 5; i++) acks.push(await c.publish(room, i));
    assert.ok(acks.every((a) => typeof a.position === 'string' && a.position !== ''), JSON.stringify(acks));

    let p = await c.history(room, { reverse: true, limit: 3 });
    assert.deepEqual(p.messages.map((m) => m.data), [4, 3, 2]);
    assert.equal(p.messages[0].position, acks[4].position);
    assert.equal(p.messages[0].channel, room);
    assert.equal(p.next, acks[2].position);
    p = await c.history(room, { reverse: true, since: p.next });
    assert.deepEqual(p.messages.map((m) => m.data), [1, 0]);
    assert.equal(p.next, undefined);

    p = await c.history(room, { since: acks[0].position, limit: 2 });
    assert.deepEqual(p.messages.map((m) => m.data), [1, 2]);
    assert.equal(p.next, acks[2].position);
    p = await c.history(room, { limit: 2 });
    assert.deepEqual(p.messages.map((m) => m.data), [3, 4], 'without since: the newest, oldest first');

    assert.equal((await rejection(c.history(room, { limit: 1001 }))).code, 'bad_request');
    const bob = client(token(uniq('bob-'), { channels: ['other'] }));
    assert.equal((await rejection(bob.history(room))).code, 'forbidden');
  });

  test('subscribe with rewind: the newest messages, then live, none twice', async () => {
    const room = uniq('rewind-');
    const c = client(token(uniq('carol-')));
    for (let i = 0; i < 5; i++) await c.publish(room, i);
    const got = collect(c);
    const s = await c.subscribe(room, { rewind: 2 });
    assert.equal(s.recovered, true);
    await c.publish(room, 5);
    await eventually(() => got.length >= 3, () => `got ${JSON.stringify(got.map((m) => m.data))}`);
    assert.deepEqual(got.map((m) => m.data), [3, 4, 5]);
    assert.equal((await rejection(c.subscribe(uniq('x-'), { rewind: -1 }))).code, 'bad_request');
  });
});
