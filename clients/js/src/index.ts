export { Client, defaults, maxHistoryPage, normalizeURL } from './client.js';
export { GatewayError, ErrorCodes } from './errors.js';
export { comparePositions } from './position.js';
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
  Subscribed,
  Unsubscribed,
  WebSocketConstructor,
  WebSocketLike,
  Welcome,
} from './types.js';
