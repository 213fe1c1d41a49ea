package middleware_test

import (
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wsgateway/gateway/protocol"
)

// newMsg is a watermill message with a fresh UUID.
func newMsg(payload string) *message.Message {
	return message.NewMessage(watermill.NewUUID(), []byte(payload))
}

// counting is a handler func that counts its calls and returns out and err.
type counting struct {
	calls int
	out   []*message.Message
	err   error
}

func (c *counting) handle(*message.Message) ([]*message.Message, error) {
	c.calls++
	return c.out, c.err
}

// wantCode fails unless err is a *protocol.Error with code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("error %v, want code %q", err, code)
	}
}

// counterValue is the value of a counter (or of one series of a counter vector).
func counterValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// histogramCount is how many observations one series of a histogram vector holds.
func histogramCount(t *testing.T, h prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}
