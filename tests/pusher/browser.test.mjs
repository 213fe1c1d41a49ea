// pusher-js and Laravel Echo in headless Chromium (Debian's chromium, driven by playwright-core,
// which downloads no browser) against a gateway node on Redis (docs/pusher.md): the page loads
// pusher-js's web build and Echo's browser build, the way an app serves them, and authorizes its
// private and presence channels through the app's own HTTP auth endpoint (this test's server,
// signing with the real `pusher` library). Run by scripts/test-browser.sh.
//
// Needs node >= 20.14, chromium (CHROMIUM, default /usr/bin/chromium), Redis (GATEWAY_REDIS_ADDR,
// default 127.0.0.1:6379) and the gateway binary (WSGATEWAY_TEST_BIN, or go to build it).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import PusherServer from 'pusher';
import { chromium } from 'playwright-core';
import { dropPrefix, killAll, startNode, uniq } from '../../clients/js/test/helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const appId = uniq('app');
const key = uniq('key');
const secret = 'pusher-browser-secret-' + randomBytes(8).toString('hex');

const prefix = uniq('pb'); // its Redis keys go after the last test
let node, app, origin, browser, server;

// The app: the page, the two client libraries, and the auth endpoint (form-encoded socket_id and
// channel_name, as pusher-js posts them; the user is the page's ?user=).
const files = {
  '/pusher.js': path.join(here, 'node_modules/pusher-js/dist/web/pusher.min.js'),
  '/echo.js': path.join(here, 'node_modules/laravel-echo/dist/echo.iife.js'),
};

function page(wsPort) {
  return `<!doctype html><meta charset="utf-8"><title>pusher</title>
<script src="/pusher.js"></script><script src="/echo.js"></script>
<script>
const user = new URLSearchParams(location.search).get('user');
window.got = [];
window.pusher = new Pusher(${JSON.stringify(key)}, {
  cluster: 'local', wsHost: '127.0.0.1', wsPort: ${wsPort}, forceTLS: false, enabledTransports: ['ws'],
  disableStats: true, channelAuthorization: { endpoint: '/pusher/auth?user=' + user, transport: 'ajax' },
});
window.echo = new Echo.default({ broadcaster: 'pusher', key: ${JSON.stringify(key)}, client: window.pusher });
</script>`;
}

before(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium, or set CHROMIUM`);
  app = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html' }).end(page(node.port));
    } else if (files[url.pathname]) {
      res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(fs.readFileSync(files[url.pathname]));
    } else if (url.pathname === '/pusher/auth' && req.method === 'POST') {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const f = new URLSearchParams(body);
        const ch = f.get('channel_name');
        const user = url.searchParams.get('user');
        const presence = ch.startsWith('presence-') ? { user_id: user, user_info: { name: user } } : undefined;
        res.writeHead(200, { 'Content-Type': 'application/json' })
          .end(JSON.stringify(server.authorizeChannel(f.get('socket_id'), ch, presence)));
      });
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${app.address().port}`;
  node = await startNode({
    GATEWAY_BROKER: 'redis',
    GATEWAY_REDIS_ADDR: process.env.GATEWAY_REDIS_ADDR ?? '127.0.0.1:6379',
    GATEWAY_TOPIC_PREFIX: prefix,
    GATEWAY_PUSHER_APPS: `${appId}:${key}:${secret}`,
    GATEWAY_PUSHER_CLIENT_EVENTS: 'true',
    GATEWAY_ALLOWED_ORIGINS: origin,
  });
  server = new PusherServer({ appId, key, secret, host: '127.0.0.1', port: String(node.port), useTLS: false });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await killAll();
  app?.close();
  await dropPrefix('redis', prefix);
});

async function open(user) {
  const p = await browser.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(e.message));
  await p.goto(`${origin}/?user=${user}`);
  await p.waitForFunction(() => window.pusher.connection.state === 'connected', null, { timeout: 10000 });
  assert.deepEqual(errors, []);
  return p;
}

test('pusher-js in Chromium: public and private channels (auth over HTTP), events from the server library', async () => {
  const p = await open('alice');
  const pub = uniq('news-');
  const priv = uniq('private-inbox-');
  await p.evaluate(([pub, priv]) => Promise.all([pub, priv].map((n) => new Promise((resolve, reject) => {
    const ch = window.pusher.subscribe(n);
    ch.bind('pusher:subscription_succeeded', resolve);
    ch.bind('pusher:subscription_error', (e) => reject(new Error(JSON.stringify(e))));
    ch.bind('note', (d) => window.got.push([n, d]));
  }))), [pub, priv]);
  await server.trigger([pub, priv], 'note', { text: 'hello' });
  await p.waitForFunction(() => window.got.length === 2, null, { timeout: 10000 });
  const got = await p.evaluate(() => window.got);
  assert.deepEqual(got.map(([n, d]) => [n, d.text]).sort(), [[pub, 'hello'], [priv, 'hello']].sort());
  await p.close();
});

test('Laravel Echo in Chromium: presence here/joining/leaving and a whisper between two pages', async () => {
  const room = uniq('room-');
  const a = await open('ann');
  await a.evaluate((room) => {
    window.joining = [];
    window.leaving = [];
    window.whispers = [];
    window.echo.join(room).here((u) => (window.here = u)).joining((u) => window.joining.push(u))
      .leaving((u) => window.leaving.push(u)).listenForWhisper('wave', (d) => window.whispers.push(d));
  }, room);
  await a.waitForFunction(() => window.here !== undefined, null, { timeout: 10000 });
  const b = await open('bob');
  await b.evaluate((room) => {
    window.room = window.echo.join(room).here((u) => (window.here = u));
  }, room);
  await b.waitForFunction(() => window.here !== undefined, null, { timeout: 10000 });
  assert.deepEqual((await b.evaluate(() => window.here.map((u) => u.name))).sort(), ['ann', 'bob']);
  await a.waitForFunction(() => window.joining.length === 1, null, { timeout: 10000 });
  await b.evaluate(() => window.room.whisper('wave', { from: 'bob' }));
  await a.waitForFunction(() => window.whispers.length === 1, null, { timeout: 10000 });
  assert.deepEqual(await a.evaluate(() => window.whispers[0]), { from: 'bob' });
  await b.close();
  await a.waitForFunction(() => window.leaving.length === 1, null, { timeout: 10000 });
  assert.deepEqual(await a.evaluate(() => window.leaving), [{ name: 'bob' }]);
  await a.close();
});
