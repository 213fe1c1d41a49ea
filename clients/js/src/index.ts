export { Client, defaults, maxHistoryPage, normalizeURL } from './client.js';
export { GatewayError, ErrorCodes } from './errors.js';
export { comparePositions } from './position.js';
export { SSESocket, sseURL, eventID } from './sse.js';
export type { EventSourceConstructor, EventSourceLike } from './sse.js';
export type {
  Ack,
  CallOptions,
  ClientOptions,
  DirectMessage,
  Disconnect,
  EventMap,
  HistoryPage,
  Member,
  Message,
  PresenceEvent,
  PresencePage,
  PresenceStats,
  State,
  Transport,
  Subscribed,
  Unsubscribed,
  WebSocketConstructor,
  WebSocketLike,
  Welcome,
} from './types.js';
