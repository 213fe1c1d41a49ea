import type { GatewayError } from './errors.js';

/**
 * The connection state. A client goes disconnected -> connecting -> connected, back to
 * disconnected when a connection ends (connecting again after the reconnect delay), and ends
 * closed (close(), or a server `disconnect` with `reconnect: false`).
 */
export type State = 'disconnected' | 'connecting' | 'connected' | 'closed';

/** The part of the WebSocket API the client uses (browsers', Node's, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: `new WebSocket(url)`. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /**
   * The gateway's WebSocket endpoint, `ws(s)://host/ws` (`http(s)://` is turned into `ws(s)://`,
   * and `/ws` is appended when the path does not end with it; in a browser a relative URL such as
   * `/ws` is resolved against the page). An array is tried in turn, moving to the next URL on
   * each connection attempt; a function is called before each attempt.
   */
  url: string | string[] | (() => string);
  /**
   * The connection token (a JWT), sent as `?token=` (browsers cannot set headers on a WebSocket).
   * A function is called before every (re)connect, so an expiring token can be refreshed. A token
   * `refresh(token)` got accepted replaces a string token for every later connection, and with a
   * function is the token of the next connection attempt (the function gives those after it).
   */
  token?: string | (() => string | Promise<string>);
  /** The WebSocket constructor; default `globalThis.WebSocket` (Node 20: `--experimental-websocket`). */
  WebSocket?: any;
  /** Smallest reconnect delay, ms (default 250). Delays are random in [0, d) ("full jitter"), d doubling per failure. */
  minReconnectDelay?: number;
  /** Largest reconnect delay, ms (default 10000). */
  maxReconnectDelay?: number;
  /** How long one attempt of a request waits for its reply, ms (default 10000). */
  ackTimeout?: number;
  /** How many times publish/send/ping are sent (same msg_id) before their promise rejects (default 5). */
  maxAttempts?: number;
  /** Longest wait for the upgrade and the welcome frame of a connection attempt, ms (default 10000). */
  handshakeTimeout?: number;
  /**
   * How often the client pings the server, ms (default 20000; 0 turns it off). A connection that
   * does not answer within `ackTimeout` is considered dead and replaced.
   */
  pingInterval?: number;
  /** publish/send refuse (`too_large`) a frame over this many bytes (default 65536, the server's default; 0: no check). */
  maxFrameSize?: number;
  /**
   * The transports to connect with, in order (default `['websocket']`). After an attempt that
   * failed before the welcome frame (the WebSocket upgrade refused or blocked by a proxy) the next
   * attempt uses the next transport, round the list. `'sse'` is Server-Sent Events (GET /sse):
   * receive-only (subscribe, messages, presence events, resume); publish, send, rpc, refresh and
   * presence() reject with `bad_request` (publish through the application's backend, the HTTP
   * API), and a subscribe() to a channel the stream does not carry reconnects it with that channel.
   */
  transports?: Transport[];
  /** The EventSource constructor for `'sse'`; default `globalThis.EventSource` (Node: the npm `eventsource` package). */
  EventSource?: any;
}

/** A way to connect: a WebSocket, or Server-Sent Events (receive-only). */
export type Transport = 'websocket' | 'sse';

/** A message on a subscribed channel. */
export interface Message {
  /** The channel as subscribed (`$user` for the user channel). */
  channel: string;
  /** The message's unique id. */
  id: string;
  /** Opaque position in the channel: what a resume (`since`) starts after. */
  position: string;
  /** The payload: the JSON value published, or a base64 string when `encoding` is `base64`. */
  data: unknown;
  /** The user id of the client that published it; absent when a service did. */
  from?: string;
  /** The session id of the client that published it; absent when a service did. */
  fromSession?: string;
  /** `base64` when the payload was not JSON and `data` is its base64 encoding. */
  encoding?: 'base64';
}

/** A message addressed to this session (`to: 'session'`) or to every connection (`to: 'all'`); not resumable. */
export interface DirectMessage {
  to: string;
  id: string;
  data: unknown;
  encoding?: 'base64';
}

/** The server's confirmation of a subscription (the first, and every automatic resubscribe). */
export interface Subscribed {
  channel: string;
  /** The channel's position when subscribed. */
  position: string;
  /** True when `since` was given and everything after it was replayed; false: messages may be missing. */
  recovered: boolean;
  /** What the server's subscribe hook gave the client for this channel; absent without one. */
  data?: unknown;
  /**
   * When the server ends the subscription (unix seconds), as its subscribe hook set it; absent:
   * never. Then an `unsubscribed` event comes with reason `expired`, and the client does not
   * subscribe again by itself.
   */
  expires?: number;
}

/**
 * The server ended a subscription on its own (an `unsubscribed` frame the client did not ask
 * for): the client forgets it and does not subscribe again; subscribe() does, if the application
 * wants to.
 */
export interface Unsubscribed {
  channel: string;
  /**
   * `expired`: the expiry the subscribe hook gave the subscription came; '' when the backend
   * unsubscribed the user (`POST /api/unsubscribe`); or another reason the server gave.
   */
  reason: string;
}

/** Options of rpc() and refresh(). */
export interface CallOptions {
  /** How long to wait for the answer, ms (default: the client's ackTimeout), from the call on. */
  timeout?: number;
}

/** The server's acceptance of a publish or send (the broker has the message). */
export interface Ack {
  /** The idempotency key the message was sent with. */
  msg_id: string;
  /** How many times it was sent. */
  attempts: number;
  /** Where the broker put a published message in its channel (brokers with history); absent otherwise. */
  position?: string;
}

/** A page of a channel's history: the answer to history(). */
export interface HistoryPage {
  channel: string;
  /** The channel's messages, as `message` events carry them: oldest first (newest first with `reverse`). */
  messages: Message[];
  /** The joins and leaves among them (channels with `presence.join_leave`), in the same order. */
  presence: PresenceEvent[];
  /** Where the next page starts (pass it as `since`); absent when there is none. */
  next?: string;
}

export interface Welcome {
  session: string;
  node: string;
  user: string;
  /** What the server's connect hook gave the client; absent without one. */
  data?: unknown;
}

/** Why a connection ended (or a connection attempt failed). */
export interface Disconnect {
  /**
   * The code of the server's `disconnect` frame (`shutdown`, `slow_consumer`, `token_expired`,
   * `policy`, `resubscribe`), or, set by the client: `connection_lost` (an established connection
   * ended without one), `connect_failed` (an attempt failed before the welcome frame).
   */
  code: string;
  reason?: string;
  /** Whether the client reconnects. */
  reconnect: boolean;
}

/**
 * A member of a presence channel (the server's `presence.channels`): one connection. A user with
 * two tabs is two members.
 */
export interface Member {
  /** The token's `sub`; '' for an anonymous connection. */
  user: string;
  /** The connection's session id. */
  session: string;
  /** The id of the node that holds the connection. */
  node: string;
  /** The token's `info` claim as the token's issuer put it there; absent without one. */
  info?: Record<string, unknown>;
}

/** The counts of a presence channel's members: connections, and distinct users among them. */
export interface PresenceStats {
  connections: number;
  users: number;
}

/** A page of a presence channel's members: the answer to presence(). */
export interface PresencePage {
  channel: string;
  /** Ordered by session id; empty when `stats` is set. */
  members: Member[];
  /** Where the next page starts (pass it as `after`); absent on the last page. */
  next?: string;
  /**
   * Set, and `members` empty, when the channel has more members than the server lists
   * (`presence.max_members`): the server answered with the counts only.
   */
  stats?: PresenceStats;
}

/**
 * A member that joined or left a channel with joins and leaves (the server's
 * `presence.join_leave`), delivered in order with the channel's messages.
 */
export interface PresenceEvent {
  channel: string;
  kind: 'join' | 'leave';
  member: Member;
  /**
   * The position of the frame that carried it in the channel's stream (a resume starts after it).
   * Several members joined or left in one frame share its position.
   */
  position: string;
}

export interface EventMap {
  message: (m: Message) => void;
  join: (e: PresenceEvent) => void;
  leave: (e: PresenceEvent) => void;
  state: (s: State, prev: State) => void;
  subscribed: (s: Subscribed) => void;
  unsubscribed: (e: Unsubscribed) => void;
  welcome: (w: Welcome) => void;
  disconnect: (d: Disconnect) => void;
  error: (e: GatewayError) => void;
  direct: (m: DirectMessage) => void;
}
