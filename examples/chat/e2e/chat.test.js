// End-to-end test of examples/chat in headless Chromium (Debian's chromium, driven by
// playwright-core): two gateway nodes on the Redis broker, the chat server, page A bound to node 1
// first (nodes list node1,node2) and page B bound to node 2. They exchange messages both ways;
// node 1 is SIGKILLed; while it is dead and page A is disconnected, page B sends more; page A must
// reconnect to node 2, resume the room and show every message exactly once, in order, with no
// "messages may be missing" banner. Who is online (the gateway's presence, across both nodes):
// each page lists both users on their nodes; while node 1 is dead page B sees alice go (her
// member reaped), then come back on node 2; when page B is closed, bob goes from page A's list.
//
// Then Chromium's own EventSource reads GET /sse of two nodes behind a balancer: node 1 is
// SIGKILLed and the browser's reconnect, with its Last-Event-ID, resumes on node 2 with every
// message once (docs/protocol.md, Server-Sent Events), on each broker of SSE_BROKERS (default
// redis,jetstream,kafka; kafka is internal/kfakeserver, started by the test).
//
// Needs: go, node >= 20, chromium (CHROMIUM, default /usr/bin/chromium), Redis (REDIS_ADDR,
// default 127.0.0.1:6379) and, for jetstream, NATS with JetStream (NATS_URL, default
// nats://127.0.0.1:4222). Run: cd examples/chat/e2e && npm ci && npm test
// (or scripts/test-browser.sh from the repository root, which installs what is missing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { jetstreamDropPrefix } from '../../../clients/js/test/helpers.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REDIS_ADDR = process.env.REDIS_ADDR || '127.0.0.1:6379';
const NATS_URL = process.env.NATS_URL || 'nats://127.0.0.1:4222';
const SSE_BROKERS = (process.env.SSE_BROKERS || 'redis,jetstream,kafka').split(',').filter(Boolean);
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const started = Date.now();
function step(msg) {
  process.stderr.write(`# [${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}\n`);
}

// ---- processes -------------------------------------------------------------------------------

const procs = new Set();
// Whatever happens to this test process, its children go with it.
const killAll = () => { for (const p of procs) if (p.running) p.child.kill('SIGKILL'); };
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { killAll(); process.exit(1); });

class Proc {
  constructor(name, cmd, args, { env, cwd } = {}) {
    this.name = name;
    this.chunks = [];
    this.exit = undefined;
    this.child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (b) => {
      this.chunks.push(b.toString());
      if (this.chunks.length > 5000) this.chunks.shift();
    };
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.once('error', (error) => { this.exit ??= { error }; resolve(this.exit); });
      this.child.once('close', (code, signal) => { this.exit ??= { code, signal }; resolve(this.exit); });
    });
    procs.add(this);
  }

  get running() { return this.exit === undefined; }
  logs() { return this.chunks.join(''); }

  // stop sends signal, and SIGKILL when the process is still there after ms.
  async stop(signal = 'SIGTERM', ms = 5000) {
    if (this.running) {
      this.child.kill(signal);
      let timer;
      const late = new Promise((resolve) => { timer = setTimeout(resolve, ms, 'late'); });
      if (await Promise.race([this.exited, late]) === 'late') this.child.kill('SIGKILL');
      clearTimeout(timer);
    }
    await this.exited;
    procs.delete(this);
  }
}

// run runs a command to completion and fails with its output when it does not exit 0.
async function run(cmd, args, opts = {}) {
  const p = new Proc(`${cmd} ${args.join(' ')}`, cmd, args, opts);
  const exit = await p.exited;
  procs.delete(p);
  if (exit.error || exit.code !== 0) {
    throw new Error(`${p.name} (in ${opts.cwd ?? process.cwd()}) failed: ${exit.error ?? `exit ${exit.code}`}\n${p.logs()}`);
  }
  return p.logs();
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// waitFor polls fn until it returns a truthy value (returned), until ms pass. Errors thrown by fn
// count as "not yet"; the last one is reported on time-out.
async function waitFor(what, fn, ms = 20_000) {
  const deadline = Date.now() + ms;
  let last;
  for (let delay = 20; ; delay = Math.min(delay * 2, 200)) {
    try {
      const v = await fn();
      if (v) return v;
      last = undefined;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message ?? last}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}

async function httpOK(url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
  await r.arrayBuffer();
  return r.status === 200;
}

// ---- a minimal Redis client: PING to check it is there, SCAN + DEL to clean up ----------------

function parseReply(buf, i) {
  const eol = buf.indexOf('\r\n', i);
  if (eol < 0) return null;
  const line = buf.toString('utf8', i + 1, eol);
  switch (String.fromCharCode(buf[i])) {
    case '+': return [line, eol + 2];
    case '-': return [new Error(`redis: ${line}`), eol + 2];
    case ':': return [Number(line), eol + 2];
    case '$': {
      const n = Number(line);
      if (n < 0) return [null, eol + 2];
      if (buf.length < eol + 2 + n + 2) return null;
      return [buf.toString('utf8', eol + 2, eol + 2 + n), eol + 2 + n + 2];
    }
    case '*': {
      const n = Number(line);
      const out = [];
      let j = eol + 2;
      for (let k = 0; k < n; k++) {
        const r = parseReply(buf, j);
        if (!r) return null;
        out.push(r[0]);
        j = r[1];
      }
      return [out, j];
    }
    default: throw new Error(`redis: unexpected reply ${JSON.stringify(line)}`);
  }
}

async function redisConnect(addr) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  const sock = net.connect({ host, port });
  sock.setTimeout(3000, () => sock.destroy(new Error(`redis ${addr}: no answer in 3 s`)));
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  const waiting = [];
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (let r; waiting.length && (r = parseReply(buf, 0));) {
      buf = buf.subarray(r[1]);
      const { resolve, reject } = waiting.shift();
      r[0] instanceof Error ? reject(r[0]) : resolve(r[0]);
    }
  });
  sock.on('error', (e) => { for (const w of waiting.splice(0)) w.reject(e); });
  return {
    command(...args) {
      return new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`);
      });
    },
    close() { sock.destroy(); },
  };
}

async function redisDropPrefix(addr, prefix) {
  const r = await redisConnect(addr);
  try {
    // Streams are `<prefix>...`; presence keys `{<prefix>:presence...}` (a hash tag first).
    for (const pattern of [`${prefix}*`, `{${prefix}*`]) {
      let cursor = '0';
      do {
        const [next, keys] = await r.command('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000);
        if (keys.length) await r.command('DEL', ...keys);
        cursor = next;
      } while (cursor !== '0');
    }
  } finally {
    r.close();
  }
}

// ---- the page ----------------------------------------------------------------------------------

// snapshot reads what the chat page shows (see the data attributes in static/index.html).
function snapshot(page) {
  return page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    return {
      state: $('status').dataset.state,
      node: $('status').dataset.node,
      pending: Number($('pending').dataset.pending),
      banner: !$('banner').hidden,
      error: $('error').hidden ? '' : $('error').textContent,
      messages: [...document.querySelectorAll('#messages li.msg')].map((li) => ({
        id: li.dataset.id, from: li.dataset.from, text: li.querySelector('.text').textContent,
      })),
      presence: $('presence').dataset.state,
      online: [...document.querySelectorAll('#online li')].map((li) => `${li.dataset.user}@${li.dataset.nodes}×${li.dataset.sessions}`),
      subscribed: [...document.querySelectorAll('#log li[data-event="subscribed"]')].map((li) => ({
        recovered: li.dataset.recovered === 'true', resumed: li.dataset.resumed === 'true', position: li.dataset.position,
      })),
    };
  });
}

const lines = (s) => s.messages.map((m) => `${m.from}: ${m.text}`);

async function join(page, url, user, room, node) {
  await page.goto(url);
  await page.fill('#name', user);
  await page.fill('#room', room);
  await page.click('#join-button');
  await waitFor(`${user} connected to ${node} and subscribed`, async () => {
    const s = await snapshot(page);
    if (s.error) throw new Error(`the page shows an error: ${s.error}`);
    return s.state === 'connected' && s.node === node && s.subscribed.length === 1;
  });
}

async function say(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

// waitLines waits until the page shows at least as many messages as expected, then asserts they
// are exactly the expected ones, in order (a duplicate or a reordering fails here, not on time-out).
async function waitLines(page, who, expected, ms) {
  const s = await waitFor(`${who} to show ${expected.length} messages`, async () => {
    const s = await snapshot(page);
    return s.messages.length >= expected.length && s;
  }, ms).catch(async (e) => {
    e.message += `\n${who} shows:\n  ${lines(await snapshot(page)).join('\n  ')}`;
    throw e;
  });
  assert.deepEqual(lines(s), expected, `${who}: the messages shown`);
  return s;
}

// waitOnline waits until the page's online list is exactly want (entries user@nodes×tabs, by user).
async function waitOnline(page, who, want, ms = 20_000) {
  let last;
  await waitFor(`${who} to list online ${JSON.stringify(want)}`, async () => {
    last = await snapshot(page);
    return last.presence === 'live' && JSON.stringify(last.online) === JSON.stringify(want);
  }, ms).catch((e) => {
    e.message += `\n${who} lists (presence ${last?.presence}): ${JSON.stringify(last?.online)}`;
    throw e;
  });
}

// ---- the test ----------------------------------------------------------------------------------

test('chat: a page whose node is killed resumes on the other node with no message missing or doubled', { timeout: 170_000 }, async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-e2e-'));
  const run_ = crypto.randomBytes(4).toString('hex');
  const prefix = `chat-e2e-${run_}`;
  const secret = crypto.randomBytes(24).toString('hex');
  const room = `room-${run_}`;
  let context;
  const pages = {};
  const consoleLines = [];
  let failed = true;
  let redisUsed = false;

  try {
    step(`checking Redis on ${REDIS_ADDR} and Chromium at ${CHROMIUM}`);
    try {
      const r = await redisConnect(REDIS_ADDR);
      try { assert.equal(await r.command('PING'), 'PONG'); } finally { r.close(); }
    } catch (e) {
      throw new Error(`Redis is not reachable on ${REDIS_ADDR} (set REDIS_ADDR, or start redis-server): ${e.message}`);
    }
    if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium, or set CHROMIUM`);

    step('building the gateway and the chat server (go build), and the JS client when clients/js/dist is missing');
    const bin = path.join(tmp, 'bin');
    const clientDir = path.join(ROOT, 'clients', 'js');
    const dist = path.join(clientDir, 'dist');
    const buildClient = async () => {
      if (fs.existsSync(path.join(dist, 'index.js'))) return;
      await run('npm', ['ci', '--no-audit', '--no-fund'], { cwd: clientDir });
      await run('npm', ['run', 'build'], { cwd: clientDir });
    };
    await Promise.all([
      run('go', ['build', '-o', `${bin}${path.sep}`, './cmd/gateway', './examples/chat'], { cwd: ROOT }),
      buildClient(),
    ]);
    assert.ok(fs.existsSync(path.join(dist, 'index.js')), 'the JS client build made dist/index.js');

    const [p1, p2, pc] = await Promise.all([freePort(), freePort(), freePort()]);
    const origin = `http://127.0.0.1:${pc}`;
    const ws1 = `ws://127.0.0.1:${p1}/ws`;
    const ws2 = `ws://127.0.0.1:${p2}/ws`;
    const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GATEWAY_')));
    const nodeEnv = (n, port) => ({
      ...baseEnv,
      GATEWAY_ADDR: `127.0.0.1:${port}`,
      GATEWAY_NODE_ID: `chat-node-${n}`,
      GATEWAY_BROKER: 'redis',
      GATEWAY_REDIS_ADDR: REDIS_ADDR,
      GATEWAY_TOPIC_PREFIX: prefix,
      GATEWAY_JWT_SECRET: secret,
      GATEWAY_ALLOWED_ORIGINS: origin,
      GATEWAY_DRAIN_PERIOD: '500ms',
      // Who is online in the rooms; a dead node's members are reaped within 2 heartbeats and a pass.
      GATEWAY_PRESENCE_CHANNELS: 'chat:*',
      GATEWAY_PRESENCE_JOIN_LEAVE: 'chat:*',
      GATEWAY_PRESENCE_HEARTBEAT: '300ms',
    });

    step(`starting gateway nodes on :${p1} and :${p2} (redis, prefix ${prefix}) and the chat server on :${pc}`);
    redisUsed = true;
    const node1 = new Proc('node 1', path.join(bin, 'gateway'), [], { env: nodeEnv(1, p1) });
    const node2 = new Proc('node 2', path.join(bin, 'gateway'), [], { env: nodeEnv(2, p2) });
    const chat = new Proc('chat server', path.join(bin, 'chat'),
      ['-addr', `127.0.0.1:${pc}`, '-nodes', `${ws1},${ws2}`, '-client', dist],
      { env: { ...baseEnv, GATEWAY_JWT_SECRET: secret } });
    for (const [p, url] of [[node1, `http://127.0.0.1:${p1}/readyz`], [node2, `http://127.0.0.1:${p2}/readyz`], [chat, `${origin}/config`]]) {
      await waitFor(`${p.name} to answer ${url}`, async () => {
        if (!p.running) throw new Error(`${p.name} exited: ${JSON.stringify(p.exit)}\n${p.logs()}`);
        return httpOK(url);
      }, 30_000);
    }

    step('starting Chromium');
    const userDataDir = path.join(tmp, 'chromium-profile');
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1100, height: 700 },
    });
    for (const name of ['A', 'B']) {
      const page = name === 'A' && context.pages().length ? context.pages()[0] : await context.newPage();
      page.on('console', (m) => consoleLines.push(`[page ${name}] ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => consoleLines.push(`[page ${name}] uncaught: ${e.message}`));
      pages[name] = page;
    }
    const { A, B } = pages;

    // Page A's /token requests can be held: while node 1 is dead, page A cannot reconnect before
    // page B has sent, so those messages can only reach it by the resume.
    let gate = null;
    await A.route((url) => url.pathname === '/token', async (route) => {
      if (gate) gate.held.push(route);
      else await route.continue();
    });

    step('page A joins through node 1, page B through node 2');
    await join(A, `${origin}/?nodes=${ws1},${ws2}`, 'alice', room, 'chat-node-1');
    await join(B, `${origin}/?nodes=${ws2}`, 'bob', room, 'chat-node-2');

    step('each page lists both users online, each on its node');
    const both = ['alice@chat-node-1×1', 'bob@chat-node-2×1'];
    await waitOnline(A, 'page A', both);
    await waitOnline(B, 'page B', both);

    step('exchanging messages both ways');
    const expected = [];
    for (const [page, who, text] of [[A, 'alice', 'hello from alice'], [B, 'bob', 'hi alice, bob here'], [A, 'alice', 'how is node 1?']]) {
      await say(page, text);
      expected.push(`${who}: ${text}`);
      await waitLines(A, 'page A', expected);
      await waitLines(B, 'page B', expected);
    }

    step('SIGKILL node 1, holding page A\'s token requests');
    gate = { held: [] };
    await node1.stop('SIGKILL');
    await waitFor('page A to notice it lost node 1 and ask for a new token', async () => {
      const s = await snapshot(A);
      return s.state !== 'connected' && gate.held.length > 0;
    });

    step('page B sees alice go: her member on the dead node is reaped');
    await waitOnline(B, 'page B', ['bob@chat-node-2×1']);

    step('page B sends while node 1 is dead and page A is disconnected');
    const missed = [];
    for (let i = 1; i <= 5; i++) missed.push(`bob: while node 1 is dead ${i}`);
    for (let i = 1; i <= 5; i++) await say(B, `while node 1 is dead ${i}`);
    expected.push(...missed);
    await waitLines(B, 'page B', expected);
    await waitFor('page B to have every publish acknowledged', async () => (await snapshot(B)).pending === 0);
    const during = await snapshot(A);
    assert.notEqual(during.state, 'connected', 'page A stayed disconnected while page B sent');
    assert.equal(during.messages.length, 3, 'page A could not have seen what page B sent while it was disconnected');

    step(`releasing page A's ${gate.held.length} held token request(s): it reconnects to node 2 and resumes`);
    const held = gate.held;
    gate = null;
    for (const route of held) await route.continue();
    await waitFor('page A to reconnect to node 2', async () => {
      const s = await snapshot(A);
      return s.state === 'connected' && s.node === 'chat-node-2';
    }, 30_000);
    let a = await waitLines(A, 'page A', expected);
    a = await waitFor('page A to log its resubscription', async () => {
      const s = await snapshot(A);
      return s.subscribed.length >= 2 && s;
    });
    assert.ok(a.subscribed.slice(1).every((s) => s.resumed && s.recovered),
      `every resubscription of page A recovered: ${JSON.stringify(a.subscribed)}`);
    assert.equal(a.banner, false, 'page A shows no "messages may be missing" banner');
    step('both pages list alice back online, now on node 2');
    const again = ['alice@chat-node-2×1', 'bob@chat-node-2×1'];
    await waitOnline(A, 'page A', again);
    await waitOnline(B, 'page B', again);

    step('page A writes again, through node 2');
    await say(A, 'alice is back');
    expected.push('alice: alice is back');
    a = await waitLines(A, 'page A', expected);
    const b = await waitLines(B, 'page B', expected);
    await waitFor('page A to have every publish acknowledged', async () => (await snapshot(A)).pending === 0);

    // Exactly once: the same message ids, in the same order, on both pages, none repeated.
    a = await snapshot(A);
    assert.deepEqual(lines(a), expected, 'page A, at the end');
    assert.deepEqual(a.messages.map((m) => m.id), b.messages.map((m) => m.id), 'both pages show the same message ids in the same order');
    assert.equal(new Set(a.messages.map((m) => m.id)).size, expected.length, 'no message id shown twice');
    assert.equal(a.banner, false, 'page A shows no banner at the end');
    assert.equal(a.error, '', 'page A shows no error');
    assert.equal((await snapshot(B)).error, '', 'page B shows no error');
    assert.deepEqual(consoleLines.filter((l) => l.includes('uncaught')), [], 'no uncaught error in the pages');
    step(`page A shows all ${expected.length} messages exactly once, in order, after resuming on node 2`);

    step('page B is closed: bob goes from page A\'s list');
    await B.close();
    delete pages.B;
    await waitOnline(A, 'page A', ['alice@chat-node-2×1']);
    assert.equal((await snapshot(A)).error, '', 'page A shows no error');
    failed = false;
  } catch (e) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-e2e-failure-'));
    for (const [name, page] of Object.entries(pages)) {
      await page.screenshot({ path: path.join(dir, `page-${name}.png`), fullPage: true }).catch(() => {});
    }
    const report = [
      ...[...procs].map((p) => `---- ${p.name} ----\n${p.logs().slice(-8000)}`),
      `---- browser console ----\n${consoleLines.join('\n')}`,
    ].join('\n');
    fs.writeFileSync(path.join(dir, 'logs.txt'), report);
    process.stderr.write(`${report}\n# screenshots and logs in ${dir}\n`);
    e.message += `\n(screenshots and logs in ${dir})`;
    throw e;
  } finally {
    if (context) await context.close().catch(() => {});
    await Promise.all([...procs].map((p) => p.stop('SIGTERM', 5000)));
    if (redisUsed) await redisDropPrefix(REDIS_ADDR, prefix).catch((e) => step(`cleaning up Redis: ${e.message}`));
    fs.rmSync(tmp, { recursive: true, force: true });
    if (!failed) step('done');
  }
});

// ---- EventSource ---------------------------------------------------------------------------------

// hs256 signs a connection token for sub with secret (what a backend would give the page).
function hs256(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${unsigned}.${crypto.createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

// startBalancer forwards 127.0.0.1:<port> to the port target() gives at each new connection: a
// load balancer in front of the nodes.
async function startBalancer(target) {
  const socks = new Set();
  const srv = net.createServer((down) => {
    const up = net.connect({ host: '127.0.0.1', port: target() });
    for (const s of [down, up]) {
      socks.add(s);
      s.on('close', () => socks.delete(s));
      s.on('error', () => { down.destroy(); up.destroy(); });
    }
    down.pipe(up).pipe(down);
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: srv.address().port,
    close: () => { for (const s of socks) s.destroy(); return new Promise((r) => srv.close(r)); },
  };
}

for (const broker of SSE_BROKERS) {
  test(`EventSource on ${broker}: the browser resumes with its own Last-Event-ID on another node after a SIGKILL`, { timeout: 120_000 }, () => eventSourceResume(broker));
}

async function eventSourceResume(broker) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-e2e-'));
  const run_ = crypto.randomBytes(4).toString('hex');
  const prefix = `sse-e2e-${broker}-${run_}`;
  const secret = crypto.randomBytes(24).toString('hex');
  const apiKey = crypto.randomBytes(24).toString('hex');
  const room = `news-${run_}`;
  let context;
  let lb;
  let page;
  const consoleLines = [];
  try {
    step(`SSE on ${broker}: building the gateway`);
    const bin = path.join(tmp, 'bin');
    await run('go', ['build', '-o', `${bin}${path.sep}`, './cmd/gateway', './internal/kfakeserver'], { cwd: ROOT });
    let kafka = '';
    if (broker === 'kafka') { // an in-memory Kafka-protocol broker of this test
      const k = new Proc('kfakeserver', path.join(bin, 'kfakeserver'), ['-addr', '127.0.0.1:0']);
      kafka = await waitFor('kfakeserver to listen', async () => {
        if (!k.running) throw new Error(`kfakeserver exited: ${JSON.stringify(k.exit)}\n${k.logs()}`);
        return k.logs().split('\n')[0].match(/^\S+:\d+$/)?.[0];
      }, 10_000);
    }
    const [p1, p2] = await Promise.all([freePort(), freePort()]);
    let target = p1;
    lb = await startBalancer(() => target);
    const origin = `http://127.0.0.1:${lb.port}`;
    const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GATEWAY_')));
    const nodeEnv = (n, port) => ({
      ...baseEnv,
      GATEWAY_ADDR: `127.0.0.1:${port}`,
      GATEWAY_NODE_ID: `sse-node-${n}`,
      GATEWAY_BROKER: broker,
      GATEWAY_REDIS_ADDR: REDIS_ADDR,
      GATEWAY_NATS_URL: NATS_URL,
      GATEWAY_JETSTREAM_MAX_AGE: '1m',
      GATEWAY_KAFKA_BROKERS: kafka,
      GATEWAY_KAFKA_PARTITIONS: '4',
      GATEWAY_TOPIC_PREFIX: prefix,
      GATEWAY_JWT_SECRET: secret,
      GATEWAY_API_KEY: apiKey,
    });
    const nodes = [new Proc('sse node 1', path.join(bin, 'gateway'), [], { env: nodeEnv(1, p1) }),
      new Proc('sse node 2', path.join(bin, 'gateway'), [], { env: nodeEnv(2, p2) })];
    for (const [p, port] of [[nodes[0], p1], [nodes[1], p2]]) {
      await waitFor(`${p.name} to be ready`, async () => {
        if (!p.running) throw new Error(`${p.name} exited: ${JSON.stringify(p.exit)}\n${p.logs()}`);
        return httpOK(`http://127.0.0.1:${port}/readyz`);
      }, 30_000);
    }
    const publish = async (body) => {
      const r = await fetch(`http://127.0.0.1:${p2}/api/publish`, {
        method: 'POST', headers: { Authorization: `Bearer ${apiKey}` }, body: JSON.stringify(body),
      });
      assert.equal(r.status, 200, await r.text());
    };

    step(`SSE on ${broker}: a page on the balancer's origin opens an EventSource of a channel and $user`);
    context = await chromium.launchPersistentContext(path.join(tmp, 'chromium-profile'), {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS,
    });
    page = context.pages()[0] ?? await context.newPage();
    page.on('console', (m) => consoleLines.push(`console ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`uncaught: ${e.message}`));
    await page.route(`${origin}/page`, (route) => route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>sse</title>' }));
    await page.goto(`${origin}/page`);
    const tok = hs256(secret, { sub: 'sally', exp: Math.floor(Date.now() / 1000) + 3600, channels: ['news-*'] });
    await page.evaluate(({ room, tok }) => {
      window.frames_ = [];
      window.ids_ = [];
      const q = new URLSearchParams([['channel', room], ['channel', '$user'], ['token', tok]]);
      const es = new EventSource(`/sse?${q}`);
      es.onmessage = (e) => { window.frames_.push(JSON.parse(e.data)); window.ids_.push(e.lastEventId); };
    }, { room, tok });
    const frames = () => page.evaluate(() => window.frames_);
    const of = async (type) => (await frames()).filter((f) => f.type === type);
    await waitFor('two subscribed events', async () => (await of('subscribed')).length === 2);

    for (const i of [1, 2, 3]) await publish({ channel: room, data: i });
    await publish({ user: 'sally', data: 'u1' });
    await waitFor('four messages', async () => (await of('message')).length === 4);

    step(`SSE on ${broker}: node 1 is SIGKILLed; the balancer sends new connections to node 2`);
    nodes[0].child.kill('SIGKILL');
    await nodes[0].exited;
    target = p2;
    for (const i of [4, 5, 6]) await publish({ channel: room, data: i });
    await publish({ user: 'sally', data: 'u2' });
    await waitFor('the resume\'s two subscribed events', async () => (await of('subscribed')).length === 4, 20_000);
    await publish({ channel: room, data: 7 });
    await waitFor('nine messages', async () => (await of('message')).length >= 9);

    const msgs = await of('message');
    assert.deepEqual(msgs.filter((m) => m.channel === room).map((m) => m.data), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(msgs.filter((m) => m.channel === '$user').map((m) => m.data), ['u1', 'u2']);
    assert.equal(new Set(msgs.map((m) => m.id)).size, msgs.length, 'no message twice');
    assert.deepEqual((await of('subscribed')).slice(2).map((s) => [s.channel, s.recovered]), [[room, true], ['$user', true]]);
    assert.equal((await of('welcome'))[1].node, 'sse-node-2');
    assert.deepEqual(consoleLines.filter((l) => l.startsWith('uncaught')), []);
    step(`SSE on ${broker}: every message once, the resume recovered on node 2`);
  } catch (e) {
    process.stderr.write(`${[...procs].map((p) => `---- ${p.name} ----\n${p.logs().slice(-4000)}`).join('\n')}\n${consoleLines.join('\n')}\n`);
    throw e;
  } finally {
    if (context) await context.close().catch(() => {});
    if (lb) await lb.close();
    await Promise.all([...procs].map((p) => p.stop('SIGTERM', 5000)));
    if (broker === 'redis') await redisDropPrefix(REDIS_ADDR, prefix).catch((e) => step(`cleaning up Redis: ${e.message}`));
    if (broker === 'jetstream') await jetstreamDropPrefix(NATS_URL, prefix).catch((e) => step(`cleaning up JetStream: ${e.message}`));
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
