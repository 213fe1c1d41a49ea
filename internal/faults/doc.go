// Package faults holds the fault tests of the whole product (issue 4, "no silent loss"): real
// gateway processes on each broker, resuming clients (clients/go/wsclient), and faults injected
// while messages flow: a node killed with SIGKILL, nodes drained and restarted one by one, a
// broker restarted, a client too slow to keep up, a Kafka partition's leader moved and a broker of a
// 3-broker cluster stopped (TestKafkaClusterFailover), a node cut off from its broker and a client cut off
// from its node by a network namespace's link going down (TestBrokerCut, TestClientCut: internal/netns;
// NETFAULT_CUT=30s or 5m makes the broker cut longer). Each test asserts that every client ends with
// every message exactly once and in order, or was told recovered:false (core NATS).
package faults
