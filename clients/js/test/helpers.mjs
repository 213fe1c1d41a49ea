// Test helpers: a real gateway binary run as processes, tokens, a TCP proxy that can hold or cut
// a connection, and waiting with deadlines.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const secret = 'js-client-test-secret-' + randomBytes(8).toString('hex');
export const apiKey = 'js-client-test-api-key-' + randomBytes(8).toString('hex');

export function uniq(prefix) {
  return `${prefix}${randomBytes(5).toString('hex')}`;
}

// ---- the gateway binary ---------------------------------------------------------------------

let bin;
let binDir;

/** binary builds ./cmd/gateway once per test process (or uses $WSGATEWAY_TEST_BIN) and returns its path. */
export function binary() {
  if (bin) return bin;
  if (process.env.WSGATEWAY_TEST_BIN) return (bin = process.env.WSGATEWAY_TEST_BIN);
  binDir = mkdtempSync(path.join(tmpdir(), 'gateway-js-test-'));
  const out = path.join(binDir, 'gateway');
  execFileSync('go', ['build', '-o', out, './cmd/gateway'], { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'] });
  return (bin = out);
}

const nodes = new Set();

// The nodes die with the test process, however it ends.
process.on('exit', () => {
  for (const n of nodes) {
    try {
      n.proc.kill('SIGKILL');
    } catch {
      // gone
    }
  }
  if (binDir) rmSync(binDir, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(1));

/** freePort returns a loopback port nothing listens on. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * startNode starts a gateway process with the given GATEWAY_* variables (GATEWAY_ADDR, the JWT
 * secret, the API key and the node id are set here) and waits until /readyz answers 200.
 */
export async function startNode(env = {}) {
  const port = await freePort();
  const id = env.GATEWAY_NODE_ID ?? uniq('js-node-');
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GATEWAY_')));
  const proc = spawn(binary(), [], {
    env: {
      ...clean,
      GATEWAY_ADDR: `127.0.0.1:${port}`,
      GATEWAY_JWT_SECRET: secret,
      GATEWAY_API_KEY: apiKey,
      GATEWAY_NODE_ID: id,
      GATEWAY_LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const node = {
    id,
    port,
    http: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    proc,
    logs: '',
    exited: new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal }))),
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return node.exited;
    },
  };
  const keep = (b) => {
    node.logs = (node.logs + b.toString()).slice(-20000);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  nodes.add(node);
  proc.once('exit', () => nodes.delete(node));
  await waitReady(node);
  return node;
}

async function waitReady(node, ms = 30000) {
  const deadline = Date.now() + ms;
  let last = 'no answer';
  let exited = false;
  node.exited.then(() => (exited = true));
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    if (exited) throw new Error(`node ${node.id} exited before it was ready:\n${node.logs}`);
    try {
      const res = await fetch(node.http + '/readyz', { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
      last = `status ${res.status}`;
    } catch (err) {
      last = err.message;
    }
    if (Date.now() > deadline) throw new Error(`node ${node.id} not ready after ${ms} ms (${last}):\n${node.logs}`);
    await new Promise((r) => setTimeout(r, delay)); // poll interval, bounded by the deadline
  }
}

/** killAll kills every node still running and waits for them. */
export async function killAll() {
  await Promise.all([...nodes].map((n) => n.kill('SIGKILL')));
}

/** apiPublish calls POST /api/publish on node. */
export async function apiPublish(node, body) {
  const res = await fetch(node.http + '/api/publish', {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST /api/publish: ${res.status} ${text}`);
  return JSON.parse(text);
}

// ---- tokens ---------------------------------------------------------------------------------

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/**
 * token makes an HS256 connection token for sub. channels and publish default to everything, send
 * to true (the gateway refuses sends of tokens without "send": true by default); ttl is in seconds;
 * info, when given, is the `info` claim presence shows of the connection.
 */
export function token(sub, { channels = ['*'], publish = ['*'], send = true, ttl = 3600, info } = {}) {
  const claims = { sub, exp: Math.floor(Date.now() / 1000) + ttl };
  if (info !== undefined) claims.info = info;
  if (channels) claims.channels = channels;
  if (publish) claims.publish = publish;
  if (send !== undefined) claims.send = send;
  const unsigned = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

// ---- waiting --------------------------------------------------------------------------------

/** eventually polls cond until it returns a truthy value, or fails after ms (what: a string, or a function making one). */
export async function eventually(cond, what, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await new Promise((r) => setTimeout(r, 5)); // poll interval, bounded by the deadline
  }
}

/** nextEvent resolves with the arguments of the next event ev of client that matches pred. */
export function nextEvent(client, ev, pred = () => true, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for a ${ev} event`));
    }, ms);
    const off = client.on(ev, (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args.length > 1 ? args : args[0]);
    });
  });
}

/** collect records a client's events of type ev (default 'message'). */
export function collect(client, ev = 'message') {
  const list = [];
  client.on(ev, (x) => list.push(x));
  return list;
}

/** rejection resolves with the error a promise rejects with, and fails if it resolves. */
export async function rejection(p) {
  try {
    const v = await p;
    throw new Error(`expected a rejection, got ${JSON.stringify(v)}`);
  } catch (err) {
    return err;
  }
}

// ---- Redis: deleting what a test's nodes wrote ------------------------------------------------

/**
 * redisDropPrefix deletes every Redis key of a topic prefix: `<prefix>...` (streams) and
 * `{<prefix>...` (presence keys, whose hash tag starts with a brace). A minimal RESP client: SCAN
 * and DEL are all it needs.
 */
export async function redisDropPrefix(addr, prefix) {
  const i = addr.lastIndexOf(':');
  const sock = net.connect({ host: addr.slice(0, i), port: Number(addr.slice(i + 1)) });
  sock.setTimeout(3000, () => sock.destroy(new Error(`redis ${addr}: no answer in 3 s`)));
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const waiting = [];
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (let r; waiting.length && (r = parseRESP(buf, 0)); ) {
      buf = buf.subarray(r[1]);
      const w = waiting.shift();
      if (r[0] instanceof Error) w.reject(r[0]);
      else w.resolve(r[0]);
    }
  });
  sock.on('error', (e) => {
    for (const w of waiting.splice(0)) w.reject(e);
  });
  const command = (...args) =>
    new Promise((resolve, reject) => {
      waiting.push({ resolve, reject });
      sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`);
    });
  try {
    for (const pattern of [`${prefix}*`, `{${prefix}*`]) {
      let cursor = '0';
      do {
        const [next, keys] = await command('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000);
        if (keys.length) await command('DEL', ...keys);
        cursor = next;
      } while (cursor !== '0');
    }
  } finally {
    sock.destroy();
  }
}

/**
 * dropPrefix deletes what the nodes of a topic prefix left on the shared server of their broker:
 * Redis keys ($GATEWAY_REDIS_ADDR, else 127.0.0.1:6379), JetStream streams and buckets
 * ($GATEWAY_NATS_URL, else nats://127.0.0.1:4222). The other brokers keep nothing after their
 * nodes.
 */
export async function dropPrefix(broker, prefix) {
  if (broker === 'redis') await redisDropPrefix(process.env.GATEWAY_REDIS_ADDR || '127.0.0.1:6379', prefix);
  if (broker === 'jetstream') await jetstreamDropPrefix(process.env.GATEWAY_NATS_URL || 'nats://127.0.0.1:4222', prefix);
}

// ---- JetStream: deleting what a test's nodes made ---------------------------------------------

/**
 * jetstreamDropPrefix deletes the JetStream streams and KV buckets the nodes of a topic prefix
 * made on the NATS server at url (nats://host:port): <prefix>_channels, <prefix>_inbound and the
 * buckets <prefix>_presence and <prefix>_control (a prefix of letters, digits and dashes is its own
 * safe name). A minimal NATS client: one request per stream on $JS.API.STREAM.DELETE, answered
 * (deleted, or not found) before it returns; at most 3 s.
 */
export async function jetstreamDropPrefix(url, prefix) {
  if (!/^[A-Za-z0-9-]+$/.test(prefix)) throw new Error(`jetstreamDropPrefix: ${prefix} is not its own safe name`);
  const u = new URL(url);
  const names = [`${prefix}_channels`, `${prefix}_inbound`, `KV_${prefix}_presence`, `KV_${prefix}_control`];
  const sock = net.connect({ host: u.hostname, port: Number(u.port || 4222) });
  try {
    await new Promise((resolve, reject) => {
      let text = '';
      const timer = setTimeout(() => reject(new Error(`nats ${url}: ${names.length} deletes not answered in 3 s`)), 3000);
      sock.on('error', reject);
      sock.on('data', (d) => {
        text += d.toString();
        if (text.includes('-ERR')) reject(new Error(`nats ${url}: ${text}`));
        if (text.includes('PING\r\n')) sock.write('PONG\r\n');
        if ((text.match(/^MSG /gm) || []).length >= names.length) {
          clearTimeout(timer);
          resolve();
        }
      });
      sock.once('connect', () => {
        const inbox = `_INBOX.jsdrop.${randomBytes(6).toString('hex')}`;
        sock.write(`CONNECT {"verbose":false,"pedantic":false}\r\nSUB ${inbox} 1\r\n`);
        for (const n of names) sock.write(`PUB $JS.API.STREAM.DELETE.${n} ${inbox} 0\r\n\r\n`);
      });
    });
  } finally {
    sock.destroy();
  }
}

// parseRESP reads one Redis reply at buf[i:]: [value, end], or null when it is not all there.
function parseRESP(buf, i) {
  const eol = buf.indexOf('\r\n', i);
  if (eol < 0) return null;
  const line = buf.toString('utf8', i + 1, eol);
  switch (String.fromCharCode(buf[i])) {
    case '+':
      return [line, eol + 2];
    case '-':
      return [new Error(`redis: ${line}`), eol + 2];
    case ':':
      return [Number(line), eol + 2];
    case '$': {
      const n = Number(line);
      if (n < 0) return [null, eol + 2];
      if (buf.length < eol + 2 + n + 2) return null;
      return [buf.toString('utf8', eol + 2, eol + 2 + n), eol + 2 + n + 2];
    }
    case '*': {
      const out = [];
      let j = eol + 2;
      for (let k = 0; k < Number(line); k++) {
        const r = parseRESP(buf, j);
        if (!r) return null;
        out.push(r[0]);
        j = r[1];
      }
      return [out, j];
    }
    default:
      throw new Error(`redis: unexpected reply ${JSON.stringify(line)}`);
  }
}

// ---- a TCP proxy ----------------------------------------------------------------------------

/**
 * startProxy forwards 127.0.0.1:<port> to target (a port, changeable with setTarget). It records
 * the text frames clients send (unmasked), can hold what the server sends (hold/release), and can
 * cut every connection (drop).
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  const proxy = {
    port: 0,
    target: targetPort,
    holding: false,
    sent: [], // text frames from the clients, parsed as JSON when they are
    setTarget(p) {
      proxy.target = p;
    },
    hold() {
      proxy.holding = true;
    },
    release() {
      proxy.holding = false;
      for (const p of pairs) {
        for (const b of p.held.splice(0)) p.down.write(b);
      }
    },
    drop() {
      for (const p of pairs) {
        p.held = [];
        p.down.destroy();
        p.up.destroy();
      }
      pairs.clear();
    },
    close() {
      proxy.drop();
      return new Promise((r) => server.close(() => r()));
    },
    get url() {
      return `ws://127.0.0.1:${proxy.port}/ws`;
    },
  };
  const server = net.createServer((down) => {
    const up = net.connect(proxy.target, '127.0.0.1');
    const pair = { down, up, held: [] };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
    const parse = frameParser((text) => {
      try {
        proxy.sent.push(JSON.parse(text));
      } catch {
        proxy.sent.push(text);
      }
    });
    down.on('data', (b) => {
      parse(b);
      up.write(b);
    });
    up.on('data', (b) => {
      if (proxy.holding) pair.held.push(b);
      else down.write(b);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  proxy.port = server.address().port;
  return proxy;
}

// frameParser reads the client side of a WebSocket connection (an HTTP upgrade request, then
// masked frames) and calls onText with each text frame.
function frameParser(onText) {
  let buf = Buffer.alloc(0);
  let upgraded = false;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (!upgraded) {
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      buf = buf.subarray(i + 4);
      upgraded = true;
    }
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      const maskOff = off;
      if (masked) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[maskOff + (i % 4)];
      buf = buf.subarray(off + len);
      if (opcode === 1) onText(payload.toString('utf8'));
    }
  };
}

// deliveredOnce checks that the publish acked as ack went out twice through proxy p (the retry
// kept its msg_id) and that the messages got holds data once: a sentinel published after it
// arrives right behind it.
export async function deliveredOnce(c, p, ack, got, room, data) {
  const attempts = p.sent.filter((f) => f.type === 'publish' && f.msg_id === ack.msg_id);
  assert.equal(attempts.length, 2);
  await c.publish(room, 'sentinel');
  await eventually(() => got.some((m) => m.data === 'sentinel'), 'the sentinel');
  assert.deepEqual(
    got.map((m) => m.data),
    [data, 'sentinel'],
  );
}
