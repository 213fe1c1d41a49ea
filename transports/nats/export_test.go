package nats

// Owner returns which of the node ids owns channel, as every node of that view computes it.
func Owner(ids []string, channel string) string {
	v := make([]peerKey, len(ids))
	for i, id := range ids {
		v[i] = peerKey{ID: id}
	}
	return ownerOf(v, channel).ID
}

// NodeID is the node's id in presence.
func (b *Broker) NodeID() string { return b.pr.self.ID }
