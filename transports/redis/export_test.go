package redis

// PauseRenewal stops (true) or resumes (false) the renewal of b's presence lease, as a network
// cut between the node and Redis would, while the rest of b goes on.
func PauseRenewal(b *Broker, paused bool) { b.presence.paused.Store(paused) }
