//go:build tools

// Package deps pins modules the backends and tests use, so `go mod tidy` keeps them while
// the packages that import them are being written. Delete an import once real code uses it.
package deps

import (
	_ "github.com/IBM/sarama"
	_ "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	_ "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	_ "github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	_ "github.com/caarlos0/env/v11"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/google/uuid"
	_ "github.com/gorilla/websocket"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/olahol/melody"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/twmb/franz-go/pkg/kfake"
	_ "github.com/twmb/franz-go/pkg/kgo"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/time/rate"
)
