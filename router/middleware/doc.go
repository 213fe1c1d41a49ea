// Package middleware holds the gateway's own Watermill router middleware, one per file beside
// its test, as Watermill lays out its own; the rest of the chain comes from watermill's
// message/router/middleware. See package router for the order.
package middleware
