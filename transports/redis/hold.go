package redis

import (
	"context"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// A member of a consumer group holds each entry it read until its subscriber acks it; redisstream
// lets any member claim an entry pending for longer than ClaimIdle (its own claim loop, XCLAIM
// with that minimum idle time). So that an entry a live member still holds (a webhook being
// retried for minutes, a slow service) is not claimed and delivered a second time, the member
// resets the idle time of its own pending entries every ClaimIdle/3 by claiming them to itself.
// A member that stops (Close, or its node dies) stops renewing, and its entries go to another
// member ClaimIdle after the last renewal.

// holdScript claims to consumer ARGV[2], with JUSTID (no delivery counted), the entries of
// group ARGV[1] pending for that consumer, at most ARGV[3] of them: that resets their idle time.
// It runs atomically, so an entry acked or claimed by another member in between is left alone.
var holdScript = goredis.NewScript(`
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[3]), ARGV[2])
if #pending == 0 then
	return 0
end
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], '0'}
for _, e in ipairs(pending) do
	args[#args + 1] = e[1]
end
args[#args + 1] = 'JUSTID'
redis.call(unpack(args))
return #pending
`)

// renewBatch bounds the entries one renewal claims; a member holds a few (one delivered, a few
// read or claimed after it), far below this.
const renewBatch = 1000

// renewer renews the pending entries of one consumer of a group until stop.
type renewer struct {
	b                    *Broker
	key, group, consumer string
	cancel               context.CancelFunc
	done                 sync.WaitGroup
}

// startRenewer starts renewing; the caller stops it with stop (safe twice).
func (b *Broker) startRenewer(ctx context.Context, key, group, consumer string) *renewer {
	ctx, cancel := context.WithCancel(ctx)
	r := &renewer{b: b, key: key, group: group, consumer: consumer, cancel: cancel}
	r.done.Add(1)
	go r.run(ctx)
	return r
}

func (r *renewer) run(ctx context.Context) {
	defer r.done.Done()
	t := time.NewTicker(r.b.cfg.ClaimIdle / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.renew(ctx)
	}
}

func (r *renewer) renew(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, min(r.b.cfg.Timeout, r.b.cfg.ClaimIdle/3))
	defer cancel()
	err := holdScript.Run(ctx, r.b.client, []string{r.key}, r.group, r.consumer, renewBatch).Err()
	if err != nil && ctx.Err() == nil {
		r.b.logger.Debug("redis: cannot renew the entries this group member holds", "stream", r.key, "group", r.group, "error", err)
	}
}

// stop ends the renewals and waits for the goroutine.
func (r *renewer) stop() {
	r.cancel()
	r.done.Wait()
}
