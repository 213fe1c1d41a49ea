package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a run; it is printed as a table and written as JSON.
type Report struct {
	Options        ReportOptions `json:"options"`
	Started        time.Time     `json:"started"`
	ConnectSeconds float64       `json:"connect_seconds"`

	Opened           int64            `json:"connections_opened"`
	Failed           int64            `json:"connections_failed"`
	Subscribed       int64            `json:"subscribed"`
	SubscribeFailed  int64            `json:"subscribe_failed"`
	Compressed       int64            `json:"connections_compressed,omitempty"`
	ConnectErrors    map[string]int64 `json:"connect_errors,omitempty"`
	ClosedEarly      int64            `json:"connections_closed_during_run"`
	Disconnects      map[string]int64 `json:"disconnects_by_code,omitempty"`
	HoldSeconds      float64          `json:"hold_seconds"`
	PublishSeconds   float64          `json:"publish_seconds,omitempty"`
	Published        int64            `json:"published"`
	PublishRate      float64          `json:"publish_rate"`
	PublishErrors    int64            `json:"publish_errors"`
	PublishErrKinds  map[string]int64 `json:"publish_errors_by_kind,omitempty"`
	PublishSkipped   int64            `json:"publish_skipped"`
	PublishLatency   *LatencyReport   `json:"publish_latency_ms,omitempty"`
	Expected         int64            `json:"deliveries_expected"`
	Received         int64            `json:"deliveries_received"`
	Lost             int64            `json:"deliveries_lost"`
	Extra            int64            `json:"deliveries_extra"`
	LossRatio        float64          `json:"loss_ratio"`
	DeliveriesPerSec float64          `json:"deliveries_per_second"`
	OtherFrames      int64            `json:"other_frames"`
	ClientCPUMillis  float64          `json:"client_cpu_ms"`
	ClientCPUPer1000 float64          `json:"client_cpu_ms_per_1000_deliveries,omitempty"`
	Latency          LatencyReport    `json:"latency_ms"`
	Churn            *ChurnReport     `json:"churn,omitempty"`
	Gaps             *GapReport       `json:"gaps,omitempty"`
	Server           *ServerReport    `json:"server,omitempty"`
	Broker           *BrokerReport    `json:"broker,omitempty"`
	Host             *HostReport      `json:"host,omitempty"`
	Notes            []string         `json:"notes,omitempty"`
}

// ChurnReport counts the resumes of -churn (and of connections lost by themselves).
type ChurnReport struct {
	Resumes      int64 `json:"resumes"`
	Recovered    int64 `json:"recovered"`     // "subscribed" said recovered:true
	NotRecovered int64 `json:"not_recovered"` // recovered:false: the node could not replay
	Failed       int64 `json:"failed"`        // the dial or the subscribe failed: the connection is gone
	Unfinished   int64 `json:"unfinished"`    // still resuming when the run closed its connections
}

// GapReport is the -gaps check: each message published after a connection's first subscribe
// (by its seq) must reach it once.
type GapReport struct {
	Checked       int64 `json:"checked"`         // deliveries owed
	Missing       int64 `json:"missing"`         // owed and never received
	Duplicates    int64 `json:"duplicates"`      // received more than once
	ConnsWithGaps int64 `json:"conns_with_gaps"` // connections missing at least one
}

// ReportOptions are the settings a report was made with (no secrets).
type ReportOptions struct {
	URL          string  `json:"url"`
	Churn        float64 `json:"churn,omitempty"`
	Conns        int     `json:"conns"`
	Channels     int     `json:"channels"`
	Rate         float64 `json:"rate"`
	Publishers   int     `json:"publishers"`
	DurationSec  float64 `json:"duration_seconds"`
	PayloadBytes int     `json:"payload_bytes"`
	Idle         bool    `json:"idle"`
	Ramp         float64 `json:"ramp"`
	SourceIPs    int     `json:"source_ips"`
	PID          int     `json:"pid,omitempty"`
	Publish      string  `json:"publish"`
	Reader       string  `json:"reader"`
	Compression  bool    `json:"compression,omitempty"`
	Pad          string  `json:"pad"`
}

// LatencyReport holds latency percentiles in milliseconds, from the payload's publish time to
// receipt (histogram resolution 1/64 of the value).
type LatencyReport struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// latencyReport summarizes h in milliseconds.
func latencyReport(h *Histogram) LatencyReport {
	return LatencyReport{Count: h.Count(), Mean: ms(h.Mean()), P50: ms(h.Quantile(0.50)), P90: ms(h.Quantile(0.90)),
		P99: ms(h.Quantile(0.99)), P999: ms(h.Quantile(0.999)), Max: ms(h.Max())}
}

// ServerReport is what /proc said about the server process.
type ServerReport struct {
	PID               int     `json:"pid"`
	RSSStartKiB       int64   `json:"rss_start_kib"`
	RSSConnectedKiB   int64   `json:"rss_connected_kib"`
	RSSEndKiB         int64   `json:"rss_end_of_run_kib"`
	RSSClosedKiB      int64   `json:"rss_after_close_kib"`
	PerConnKiB        float64 `json:"rss_per_connection_kib"`
	PerConnEndKiB     float64 `json:"rss_per_connection_end_of_run_kib"`
	CPUMillis         float64 `json:"cpu_ms"`
	CPUPer1000Deliver float64 `json:"cpu_ms_per_1000_deliveries,omitempty"`
	CPUCoresUsed      float64 `json:"cpu_cores_used"`
	// WritesPer1000 is the server's write(2)/writev(2) calls per 1,000 deliveries while measuring
	// (syscw of /proc/PID/io): how well it coalesces frames into socket writes.
	WritesPer1000 float64 `json:"write_syscalls_per_1000_deliveries,omitempty"`
	// BytesPerDelivery is the bytes the server wrote (wchar of /proc/PID/io: TCP payload, frame
	// headers included, TLS records when https) per delivery while measuring.
	BytesPerDelivery float64 `json:"write_bytes_per_delivery,omitempty"`
}

// BrokerReport is the broker server's CPU (-broker-pid) while measuring.
type BrokerReport struct {
	PID               int     `json:"pid"`
	CPUMillis         float64 `json:"cpu_ms"`
	CPUPer1000Deliver float64 `json:"cpu_ms_per_1000_deliveries,omitempty"`
	CPUPerMessageUS   float64 `json:"cpu_us_per_message,omitempty"`
	CPUCoresUsed      float64 `json:"cpu_cores_used"`
}

// fillBroker adds the broker's CPU between samples s1 and s2.
func (r *Report) fillBroker(pid int, s1, s2 procSample) {
	if pid == 0 || s1.At.IsZero() || s2.At.IsZero() {
		return
	}
	cpu := s2.CPU - s1.CPU
	br := &BrokerReport{PID: pid, CPUMillis: ms(cpu)}
	if wall := s2.At.Sub(s1.At); wall > 0 {
		br.CPUCoresUsed = cpu.Seconds() / wall.Seconds()
	}
	if r.Received > 0 {
		br.CPUPer1000Deliver = br.CPUMillis / (float64(r.Received) / 1000)
	}
	if r.Published > 0 {
		br.CPUPerMessageUS = br.CPUMillis * 1000 / float64(r.Published)
	}
	r.Broker = br
	if r.Host != nil { // the broker is not "other processes"
		r.Host.OtherCores = max(0, r.Host.OtherCores-br.CPUCoresUsed)
	}
}

// HostReport is the whole machine's CPU while measuring, to tell a quiet machine from a shared
// one: Others is what neither the server (given -pid) nor wsbench used.
type HostReport struct {
	Cores        int     `json:"cores"`
	BusyCores    float64 `json:"busy_cores"`
	WsbenchCores float64 `json:"wsbench_cores"`
	ServerCores  float64 `json:"server_cores,omitempty"`
	OtherCores   float64 `json:"other_cores"`
}

func (r *Report) fillHost(busy, wall time.Duration) {
	if busy <= 0 || wall <= 0 {
		return
	}
	h := &HostReport{Cores: hostCores(), BusyCores: busy.Seconds() / wall.Seconds(), WsbenchCores: r.ClientCPUMillis / 1000 / wall.Seconds()}
	if r.Server != nil {
		h.ServerCores = r.Server.CPUCoresUsed
	}
	h.OtherCores = max(0, h.BusyCores-h.WsbenchCores-h.ServerCores)
	r.Host = h
}

func reportOptions(o options) ReportOptions {
	return ReportOptions{URL: o.URL, Churn: o.Churn, Conns: o.Conns, Channels: o.Channels, Rate: o.Rate, Publishers: o.Publishers,
		DurationSec: o.Duration.Seconds(), PayloadBytes: o.Payload, Idle: o.Idle, Ramp: o.Ramp, SourceIPs: o.SourceIPs, PID: o.PID,
		Publish: o.Publish, Reader: o.Reader, Compression: o.Compression, Pad: o.Pad}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fill completes rep from the counters; s0..s3 are the server samples at start, connected,
// end of the run, after closing.
func (b *bench) fill(rep *Report, pubDur, holdDur, clientCPU time.Duration, s0, s1, s2, s3 procSample) {
	rep.Opened = b.opened.Load()
	rep.Failed = b.failed.Load()
	rep.Subscribed = b.subscribed.Load()
	rep.Compressed = b.compressed.Load()
	rep.SubscribeFailed = b.subFailed.Load()
	rep.ClosedEarly = b.closedEarly.Load()
	rep.HoldSeconds = holdDur.Seconds()
	rep.PublishSeconds = pubDur.Seconds()
	rep.Published = b.published.Load()
	rep.PublishErrors = b.pubErrors.Load()
	rep.PublishSkipped = b.pubSkipped.Load()
	if pubDur > 0 {
		rep.PublishRate = float64(rep.Published) / pubDur.Seconds()
	}
	rep.Expected = b.expected.Load()
	for i := range b.shards {
		rep.Received += b.shards[i].received.Load()
		rep.OtherFrames += b.shards[i].other.Load()
	}
	if rep.Expected > rep.Received {
		rep.Lost = rep.Expected - rep.Received
	} else {
		rep.Extra = rep.Received - rep.Expected
	}
	if rep.Expected > 0 {
		rep.LossRatio = float64(rep.Lost) / float64(rep.Expected)
	}
	if holdDur > 0 {
		rep.DeliveriesPerSec = float64(rep.Received) / holdDur.Seconds()
		if pubDur > 0 {
			rep.DeliveriesPerSec = float64(rep.Received) / pubDur.Seconds()
		}
	}
	if b.o.Churn > 0 {
		rep.Churn = &ChurnReport{Resumes: b.resumes.Load(), Recovered: b.resumesRecovered.Load(),
			NotRecovered: b.resumesNotRecovered.Load(), Failed: b.resumeFailed.Load()}
		rep.Churn.Unfinished = rep.Churn.Resumes - rep.Churn.Recovered - rep.Churn.NotRecovered - rep.Churn.Failed
	}
	b.connsMu.Lock()
	conns := b.closed
	b.connsMu.Unlock()
	rep.Gaps = b.gapReport(conns)
	rep.ClientCPUMillis = ms(clientCPU)
	if rep.Received > 0 {
		rep.ClientCPUPer1000 = rep.ClientCPUMillis / (float64(rep.Received) / 1000)
	}
	h := b.mergedHist()
	rep.Latency = latencyReport(h)
	if b.pubHist.Count() > 0 {
		pl := latencyReport(&b.pubHist)
		rep.PublishLatency = &pl
	}
	b.mu.Lock()
	rep.ConnectErrors = maps.Clone(b.connErrors)
	rep.Disconnects = maps.Clone(b.disconnects)
	rep.PublishErrKinds = maps.Clone(b.pubErrKinds)
	b.mu.Unlock()
	if b.o.PID > 0 && !s0.At.IsZero() {
		sr := &ServerReport{PID: b.o.PID, RSSStartKiB: s0.RSSKiB, RSSConnectedKiB: s1.RSSKiB, RSSEndKiB: s2.RSSKiB, RSSClosedKiB: s3.RSSKiB}
		if rep.Subscribed > 0 && !s1.At.IsZero() {
			sr.PerConnKiB = float64(s1.RSSKiB-s0.RSSKiB) / float64(rep.Subscribed)
			if !s2.At.IsZero() {
				sr.PerConnEndKiB = float64(s2.RSSKiB-s0.RSSKiB) / float64(rep.Subscribed)
			}
		}
		if !s1.At.IsZero() && !s2.At.IsZero() {
			cpu := s2.CPU - s1.CPU
			sr.CPUMillis = ms(cpu)
			if wall := s2.At.Sub(s1.At); wall > 0 {
				sr.CPUCoresUsed = cpu.Seconds() / wall.Seconds()
			}
			if rep.Received > 0 {
				sr.CPUPer1000Deliver = sr.CPUMillis / (float64(rep.Received) / 1000)
				if s1.SyscW >= 0 && s2.SyscW >= s1.SyscW {
					sr.WritesPer1000 = float64(s2.SyscW-s1.SyscW) / (float64(rep.Received) / 1000)
				}
				if s1.WChar >= 0 && s2.WChar >= s1.WChar {
					sr.BytesPerDelivery = float64(s2.WChar-s1.WChar) / float64(rep.Received)
				}
			}
		}
		rep.Server = sr
	}
}

// printTable writes the report as a two-column table.
func printTable(w io.Writer, r *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	o := r.Options
	mode := fmt.Sprintf("%.0f msg/s for %gs, payload %d B, %d publishers (%s)", o.Rate, o.DurationSec, o.PayloadBytes, o.Publishers, o.Publish)
	if o.Idle {
		mode = fmt.Sprintf("idle, held %gs", o.DurationSec)
	}
	row("target", "%s", o.URL)
	row("run", "%d conns on %d channel(s), %s, %s reader", o.Conns, o.Channels, mode, o.Reader)
	row("connections", "opened %d, failed %d, subscribed %d, subscribe failed %d (%.1fs)", r.Opened, r.Failed, r.Subscribed, r.SubscribeFailed, r.ConnectSeconds)
	if o.Compression {
		row("compression", "permessage-deflate offered by %d, accepted on %d", r.Opened, r.Compressed)
	}
	for _, k := range slices.Sorted(maps.Keys(r.ConnectErrors)) {
		row("  connect error", "%d × %s", r.ConnectErrors[k], k)
	}
	row("closed during run", "%d", r.ClosedEarly)
	for _, k := range slices.Sorted(maps.Keys(r.Disconnects)) {
		row("  disconnect", "%d × %s", r.Disconnects[k], k)
	}
	if !o.Idle {
		row("published", "%d (%.1f/s), errors %d, skipped (publishers busy) %d", r.Published, r.PublishRate, r.PublishErrors, r.PublishSkipped)
		for _, k := range slices.Sorted(maps.Keys(r.PublishErrKinds)) {
			row("  publish error", "%d × %s", r.PublishErrKinds[k], k)
		}
		if l := r.PublishLatency; l != nil {
			row("publish latency ms", "p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f  (n=%d; request to answer)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
		}
		row("deliveries", "expected %d, received %d, lost %d (%.4f%%; missing at the end of -grace), extra %d", r.Expected, r.Received, r.Lost, 100*r.LossRatio, r.Extra)
		row("deliveries/s", "%.0f", r.DeliveriesPerSec)
		l := r.Latency
		row("latency ms", "p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f  (n=%d)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
		if c := r.Churn; c != nil {
			row("resumes", "%d (%.1f/s asked): recovered %d, not recovered %d, failed %d, unfinished at the end %d", c.Resumes, o.Churn, c.Recovered, c.NotRecovered, c.Failed, c.Unfinished)
		}
		if g := r.Gaps; g != nil {
			row("gap check", "owed %d, missing %d (on %d connections), duplicates %d", g.Checked, g.Missing, g.ConnsWithGaps, g.Duplicates)
		}
	}
	if r.ClientCPUPer1000 > 0 {
		row("wsbench cpu", "%.0f ms while measuring (%.2f ms per 1000 deliveries)", r.ClientCPUMillis, r.ClientCPUPer1000)
	}
	if r.OtherFrames > 0 {
		row("other frames", "%d", r.OtherFrames)
	}
	if s := r.Server; s != nil {
		row("server pid", "%d", s.PID)
		row("server rss MiB", "start %.1f, connected %.1f, end of run %.1f, after close %.1f",
			kib2mib(s.RSSStartKiB), kib2mib(s.RSSConnectedKiB), kib2mib(s.RSSEndKiB), kib2mib(s.RSSClosedKiB))
		row("server rss/conn KiB", "%.1f when connected, %.1f at end of run", s.PerConnKiB, s.PerConnEndKiB)
		row("server cpu", "%.0f ms (%.2f cores)", s.CPUMillis, s.CPUCoresUsed)
		if s.CPUPer1000Deliver > 0 {
			row("server cpu/1000 deliveries", "%.2f ms", s.CPUPer1000Deliver)
		}
		if s.WritesPer1000 > 0 {
			row("server writes/1000 deliv.", "%.0f write syscalls", s.WritesPer1000)
		}
		if s.BytesPerDelivery > 0 {
			row("server bytes/delivery", "%.1f bytes written", s.BytesPerDelivery)
		}
	}
	if br := r.Broker; br != nil {
		row("broker cpu", "%.0f ms (%.2f cores), %.2f ms per 1000 deliveries, %.1f µs per message published (pid %d)",
			br.CPUMillis, br.CPUCoresUsed, br.CPUPer1000Deliver, br.CPUPerMessageUS, br.PID)
	}
	if h := r.Host; h != nil && r.Server == nil {
		row("host cpu (cores busy)", "%.2f of %d: wsbench %.2f, everything else (server included) %.2f", h.BusyCores, h.Cores, h.WsbenchCores, h.OtherCores)
	} else if h != nil {
		row("host cpu (cores busy)", "%.2f of %d: server %.2f, wsbench %.2f, other processes %.2f", h.BusyCores, h.Cores, h.ServerCores, h.WsbenchCores, h.OtherCores)
	}
	for _, n := range r.Notes {
		row("note", "%s", n)
	}
	_ = tw.Flush()
}

func kib2mib(k int64) float64 { return float64(k) / 1024 }

// writeJSON writes the report to path.
func writeJSON(path string, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
