package nats

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// outbox holds the presence messages to other nodes' subjects until the Broker's sender
// goroutine publishes them, in the order they were queued: what a node queues under the
// presence lock (a sync's records and its done, then a join) reaches a peer in that order, and
// the writes, a large sync's megabytes included, happen without the lock (nats.go writes to the
// socket itself when its buffer fills). Heartbeats, hellos and answers are published directly.
//
// A sync queued for a node replaces the one queued for it before and not yet sent (the asker
// reads only the sync of its last request), and a node asked again for the sync it is still
// sending, or sent less than a heartbeat ago, sends no second one (syncing): a large sync that a
// loaded asker waits long for is not sent again and again, behind itself (the asker asks every
// half heartbeat while nothing of it has come; one that was lost is sent again at the next).
type outbox struct {
	mu      sync.Mutex
	jobs    []outJob
	sending []outJob            // taken by the sender, being published
	sent    map[string]sentSync // the last sync sent whole to each subject
	wake    chan struct{}       // capacity 1
}

// sentSync is a sync sent whole: its epoch, and when its last message was handed to nats.go.
type sentSync struct {
	epoch uint64
	at    time.Time
}

// outJob is messages published in order; once one fails, the rest of the job is not sent (a
// sync's done must not follow a record that was lost).
type outJob struct {
	msgs    []*natsgo.Msg
	sync    bool   // a sync: records, then done
	to      string // the node's id, for the log
	subject string // a sync: the asker's subject
	epoch   uint64 // a sync: the asker's epoch
}

// syncing reports whether a sync of epoch to subject is queued, being sent, or was sent whole
// less than within ago.
func (o *outbox) syncing(subject string, epoch uint64, within time.Duration) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if s, ok := o.sent[subject]; ok && s.epoch == epoch && time.Since(s.at) < within {
		return true
	}
	for _, js := range [][]outJob{o.jobs, o.sending} {
		for _, j := range js {
			if j.sync && j.subject == subject && j.epoch == epoch {
				return true
			}
		}
	}
	return false
}

// toNode queues w for a node's subject. A message larger than the server takes fails at once,
// as a direct publish did (the other publish errors are logged by the sender).
func (b *Broker) toNode(subject, reply string, w wire, to string) error {
	data, err := json.Marshal(w)
	if err != nil {
		return err
	}
	if mp := b.nc.MaxPayload(); mp > 0 && int64(len(data)) > mp {
		return natsgo.ErrMaxPayload
	}
	b.queue(outJob{msgs: []*natsgo.Msg{{Subject: subject, Reply: reply, Data: data}}, to: to})
	return nil
}

func (b *Broker) queue(j outJob) {
	o := &b.pr.out
	o.mu.Lock()
	if j.sync {
		o.jobs = slices.DeleteFunc(o.jobs, func(q outJob) bool { return q.sync && q.subject == j.subject })
	}
	o.jobs = append(o.jobs, j)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// sendLoop publishes what is queued, until Close; then it hands nats.go what was queued before
// (as a direct publish had), which Close flushes when it closes the connection.
func (b *Broker) sendLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			b.sendQueued()
			return
		case <-b.pr.out.wake:
			b.sendQueued()
		}
	}
}

func (b *Broker) sendQueued() {
	o := &b.pr.out
	o.mu.Lock()
	jobs := o.jobs
	o.jobs, o.sending = nil, jobs
	o.mu.Unlock()
	for i, j := range jobs {
		ok := b.send(j)
		o.mu.Lock()
		o.sending = jobs[i+1:]
		if ok && j.sync {
			if o.sent == nil {
				o.sent = map[string]sentSync{}
			}
			now := time.Now()
			for k, s := range o.sent { // those that no longer hold anything back
				if now.Sub(s.at) >= b.pr.hb {
					delete(o.sent, k)
				}
			}
			o.sent[j.subject] = sentSync{epoch: j.epoch, at: now}
		}
		o.mu.Unlock()
	}
}

// send publishes j's messages and reports whether all were handed to nats.go.
func (b *Broker) send(j outJob) bool {
	p := b.pr
	for i, m := range j.msgs {
		err := b.nc.PublishMsg(m)
		if err == nil && j.sync && i < len(j.msgs)-1 && p.failRecs.Load() > 0 && p.failRecs.Add(-1) >= 0 {
			err = errors.New("a fault of the test")
		}
		if err == nil {
			continue
		}
		if j.sync {
			b.logger.Warn("nats presence: sync message not sent, the node will ask again", "node_id", j.to, "error", err)
		} else {
			b.logger.Debug("nats presence: message not sent", "node_id", j.to, "error", err)
		}
		return false
	}
	return true
}
