# syntax=docker/dockerfile:1

# The gateway's container image: one static Go binary, run by a non-root user.
#
#   docker build -t wsgateway/gateway .
#   docker run --rm -p 8080:8080 wsgateway/gateway          # development mode: prints a made-up secret and a token
#   docker run --rm -p 8080:8080 -e GATEWAY_JWT_SECRET=... -e GATEWAY_BROKER=nats -e GATEWAY_NATS_URL=nats://nats:4222 wsgateway/gateway
#
# The same file builds the example service (examples/echo) as a second image, from the stage named
# echo; building the gateway (the default, last stage) neither compiles nor ships it:
#
#   docker build --target echo -t wsgateway/echo .
#   docker run --rm -e GATEWAY_BROKER=nats -e GATEWAY_NATS_URL=nats://nats:4222 -e GATEWAY_JWT_SECRET=... wsgateway/echo
#
# The gateway image sets no GATEWAY_* variable on purpose: with no JWT secret, public key or
# anonymous access set, and the default memory broker, the node starts in development mode exactly
# like `go run ./cmd/gateway`; otherwise it is configured by the environment. The echo image reads the very same GATEWAY_* settings as the gateways it serves.
#
# Why the final stage is Alpine and not distroless or scratch: an image HEALTHCHECK (and a compose
# healthcheck, which also runs inside the container) needs a program in the image that asks
# GET /readyz. distroless/static and scratch have neither a shell nor an HTTP client, and the
# gateway binary has no probe mode of its own. Alpine adds about 8 MB for busybox `wget` (the probe)
# and a shell for `docker exec` debugging; the binary itself is static (CGO_ENABLED=0) and does not
# use anything from it. Where the orchestrator probes over HTTP itself (Kubernetes httpGet on
# /readyz), `FROM gcr.io/distroless/static-debian12:nonroot` without the HEALTHCHECK works as well.

ARG GO_VERSION=1.26
ARG ALPINE_VERSION=3.20

# ---- build: a static, stripped binary; compiled natively and cross-compiled for the target platform.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so that changing the source does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w" -o /out/gateway ./cmd/gateway

# ---- build-echo: the example service, the same way. A stage of its own, which only the echo
# target needs, so that `docker build .` does not compile it; it shares the module and build
# caches (and the packages compiled for the gateway) with the stage above.
FROM build AS build-echo
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w" -o /out/echo-service ./examples/echo

# ---- runtime: what both images start from, Alpine and the non-root user.
FROM alpine:${ALPINE_VERSION} AS runtime
RUN addgroup -S -g 10001 gateway \
    && adduser -S -D -H -u 10001 -G gateway -s /sbin/nologin gateway

# ---- echo: the example service's image (`--target echo`). The binary is echo-service, not echo,
# which would shadow busybox's echo in the shell.
FROM runtime AS echo
COPY --from=build-echo /out/echo-service /usr/local/bin/echo-service
USER 10001:10001
# SIGTERM: the service stops consuming and exits 0.
STOPSIGNAL SIGTERM
# /healthz (served with -health-addr, see CMD) is 200 while the service consumes its group and the
# broker answers, 503 otherwise.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["wget", "-q", "-T", "2", "-O", "/dev/null", "http://127.0.0.1:8081/healthz"]
ENTRYPOINT ["/usr/local/bin/echo-service"]
CMD ["-health-addr", ":8081"]

# ---- run: the gateway image, the last stage and so the default target.
FROM runtime AS gateway
COPY --from=build /out/gateway /usr/local/bin/gateway
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
EXPOSE 8080
# SIGTERM drains the node (sessions get "shutdown", reconnect true) and it exits 0; give it the
# drain period plus the write timeout plus a few seconds before a SIGKILL (docker stop -t,
# compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
# /readyz is 503 while the broker is unreachable and from the start of a drain. Assumes the default
# GATEWAY_ADDR (:8080); a node listening elsewhere needs its own healthcheck.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["wget", "-q", "-T", "2", "-O", "/dev/null", "http://127.0.0.1:8080/readyz"]
# Exec form: the gateway is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["/usr/local/bin/gateway"]
