package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is a fixed log-linear histogram of durations in microseconds, in the manner of
// HdrHistogram: values below 64 µs are exact, and every power of two above is split into 64
// buckets, so a recorded value is known to within 1/64 (1.6 %) of itself: 10 ms ± 0.16 ms.
// Record is lock-free (atomic adds), so connections of one shard may share a histogram.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	total  atomic.Uint64
	sumUS  atomic.Uint64
	maxUS  atomic.Uint64
}

const (
	histSub     = 64 // buckets per power of two
	histSubBits = 6
	histMaxBits = 40 // values are clamped below 2^40 µs (12.7 days)
	histBuckets = (histMaxBits - histSubBits + 1) * histSub
)

// bucketOf returns the bucket index of v µs.
func bucketOf(v uint64) int {
	if v >= 1<<histMaxBits {
		v = 1<<histMaxBits - 1
	}
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [64, 128)
	return (shift+1)*histSub + int(v>>shift) - histSub
}

// bucketBounds returns the lowest and highest value of bucket i, in µs.
func bucketBounds(i int) (lo, hi uint64) {
	if i < histSub {
		return uint64(i), uint64(i)
	}
	shift := i/histSub - 1
	m := uint64(i%histSub + histSub)
	return m << shift, (m+1)<<shift - 1
}

// Record adds one duration (negative counts as 0).
func (h *Histogram) Record(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	h.counts[bucketOf(us)].Add(1)
	h.total.Add(1)
	h.sumUS.Add(us)
	for {
		m := h.maxUS.Load()
		if us <= m || h.maxUS.CompareAndSwap(m, us) {
			break
		}
	}
}

// Merge adds the counts of o to h (o may be recorded into concurrently; the merge is a snapshot
// good enough for reporting).
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(o.total.Load())
	h.sumUS.Add(o.sumUS.Load())
	if m := o.maxUS.Load(); m > h.maxUS.Load() {
		h.maxUS.Store(m)
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Max is the largest recorded value, exact.
func (h *Histogram) Max() time.Duration { return time.Duration(h.maxUS.Load()) * time.Microsecond }

// Mean is the mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sumUS.Load()/n) * time.Microsecond
}

// Quantile returns the value below or at which a fraction q (0..1) of the recorded values lie:
// the highest value of the bucket holding that rank, never above the maximum. It is 0 when
// nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	var counts [histBuckets]uint64
	var total uint64
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0
	}
	q = math.Min(math.Max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(total)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			_, hi := bucketBounds(i)
			if m := h.maxUS.Load(); hi > m {
				hi = m
			}
			return time.Duration(hi) * time.Microsecond
		}
	}
	return h.Max()
}
