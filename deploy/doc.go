// Package deploy holds the deployment files of the gateway that are not Go code (the load
// balancer's nginx.conf, and in time Kubernetes manifests) and the tests that keep them, the
// repository's Dockerfile, .dockerignore and docker-compose.yml consistent with what the code
// expects: every GATEWAY_* variable is one the configs package reads and passes configs.Load, each
// broker address names a service of the same compose profile, the load balancer names every
// gateway and upgrades WebSockets, and the image builds ./cmd/gateway for a non-root user.
//
// Nothing here needs Docker: the tests parse the files.
package deploy
