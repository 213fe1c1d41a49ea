package nodetest

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
)

// InProcess builds a node from cfg, starts its router and serves it on an httptest server;
// everything is closed when the test ends. It returns the node and its base URL.
func InProcess(t testing.TB, cfg *configs.Config, opts ...gateway.Option) (*gateway.Gateway, string) {
	t.Helper()
	g, err := gateway.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		_ = g.Close()
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close() // the node's Close closes the WebSockets, which httptest no longer tracks
		_ = g.Close()
	})
	return g, srv.URL
}
