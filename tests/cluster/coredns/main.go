// Command coredns is CoreDNS with only the plugins the test cluster's DNS needs: cluster names from
// the API server (kubernetes), an address to listen on (bind: the cluster bridge, nothing wider) and
// its health and readiness endpoints. Nothing is forwarded off this machine, so forward is left out.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order plugins see a query in (CoreDNS's plugin.cfg order, restricted to the ones above).
var directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
