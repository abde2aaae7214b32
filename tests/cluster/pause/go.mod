// The pod sandbox's process (what registry.k8s.io/pause is elsewhere), built by ../ensure.sh.
module tollgate.dev/testenv/pause

go 1.24.0
