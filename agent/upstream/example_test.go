package upstream_test

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// The data plane resolves a cluster once per configuration, then picks per connection,
// retrying on another host when connecting fails.
func ExampleCluster_Pick() {
	r := upstream.NewRegistry(nil, nil)
	defer r.Close()
	r.Update([]upstream.ClusterConfig{{
		Name:   "pacs",
		Policy: upstream.RingHash,
		Endpoints: []upstream.Endpoint{
			{Addr: netip.MustParseAddrPort("192.0.2.3:4242")},
			{Addr: netip.MustParseAddrPort("192.0.2.4:4242")},
		},
		Outlier: &upstream.Outlier{},
	}})
	c := r.Cluster("pacs")
	client := netip.MustParseAddr("198.51.100.7")
	var tried []netip.AddrPort
	for range 2 {
		h, err := c.Pick(upstream.HashAddr(client), tried)
		if errors.Is(err, upstream.ErrOverflow) || errors.Is(err, upstream.ErrNoHealthyUpstream) {
			return
		}
		// Pretend the first host refuses the connection.
		if len(tried) == 0 {
			h.ConnectFailed()
			tried = append(tried, h.Addr())
			h.Release()
			continue
		}
		h.Connected()
		fmt.Println("connected; retry avoided the failed host:", h.Addr() != tried[0])
		h.Release()
	}
	// Output: connected; retry avoided the failed host: true
}
