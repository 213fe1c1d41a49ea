// Package deploy holds the deployment files of the gateway that are not Go code and the tests
// that keep them consistent with what the code expects:
//
//   - nginx.conf (the load balancer of docker compose), the repository's Dockerfile,
//     .dockerignore and docker-compose.yml (compose_test.go): every GATEWAY_* variable is one the
//     configs package reads and passes configs.Load, each broker address names a service of the
//     same compose profile, the load balancer names every gateway and upgrades WebSockets, each
//     cluster profile runs the example service (examples/echo) with its gateways' broker, topic
//     prefix and flags echo defines, and the images build ./cmd/gateway and ./examples/echo for
//     a non-root user;
//   - k8s/, Kubernetes manifests with a kustomization (k8s_test.go): the Deployment's environment,
//     image, user, probes, resources and grace period against the code and the Dockerfile, and
//     the Service, PodDisruptionBudget, HorizontalPodAutoscaler and broker around it;
//   - grafana/gateway-dashboard.json and prometheus/alerts.yml (observability_test.go): every
//     metric and label they use is one a gateway node started in the test exports.
//
// Nothing here needs Docker, a cluster or Prometheus: the tests parse the files (and render the
// kustomization with kubectl when it is installed). docs/operations.md explains the files.
package deploy
