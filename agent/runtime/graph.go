package runtime

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/flotilla-proxy/flotilla/agent/httproute"
	"github.com/flotilla-proxy/flotilla/agent/match"
	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
	"github.com/flotilla-proxy/flotilla/agent/upstream"
)

// Graph is the agent's complete runtime configuration: every listener, the cluster each one
// proxies to, the route tables of its HTTP chains and the endpoints of every cluster. It is built whole by Build and never changes
// afterwards, so the data plane can publish it with one atomic store and a connection can
// keep the parts it started with for as long as it lives. All methods are safe for
// concurrent use.
//
// State that must outlive a configuration change (health, ejections, round-robin positions,
// open connections) does not live here; the data plane keeps it in registries keyed by name
// (package upstream).
type Graph struct {
	listeners      []*Listener // sorted by name
	listenerByName map[string]*Listener
	clusters       []*Cluster // sorted by name
	clusterByName  map[string]*Cluster
	routes         map[string]*httproute.Table // RDS RouteConfigurations by name
	src            Resources
}

// RouteTable returns the compiled RouteConfiguration with that name (the RDS resource an
// HTTP chain's manager names), or nil.
func (g *Graph) RouteTable(name string) *httproute.Table { return g.routes[name] }

// Listeners returns the listeners sorted by name.
func (g *Graph) Listeners() []*Listener { return slices.Clone(g.listeners) }

// Listener returns the listener with that name, or nil.
func (g *Graph) Listener(name string) *Listener { return g.listenerByName[name] }

// Clusters returns the clusters sorted by name.
func (g *Graph) Clusters() []*Cluster { return slices.Clone(g.clusters) }

// Cluster returns the cluster with that name, or nil.
func (g *Graph) Cluster(name string) *Cluster { return g.clusterByName[name] }

// Resources returns the resources the graph was built from, for config dumps. The maps are
// fresh copies; the messages are shared and must not be modified.
func (g *Graph) Resources() *Resources {
	return &Resources{
		Listeners: maps.Clone(g.src.Listeners),
		Clusters:  maps.Clone(g.src.Clusters),
		Endpoints: maps.Clone(g.src.Endpoints),
		Secrets:   maps.Clone(g.src.Secrets),
		Routes:    maps.Clone(g.src.Routes),
	}
}

// Listener is one compiled listener: a TCP socket address, its listener filters and its
// filter chains, each running a tcp_proxy or serving HTTP; or a UDP socket address and its
// udp_proxy.
type Listener struct {
	name              string
	udp               *UDPProxy
	addr              netip.AddrPort
	v6only            bool
	proxyProtocol     bool
	tlsInspector      bool
	filtersTimeout    time.Duration
	handshakeTimeout  time.Duration
	continueOnTimeout bool
	chains            []*FilterChain
	defaultChain      *FilterChain
	matcher           *match.Matcher
	maxConnections    uint64
}

// MaxConnections returns the connection_limit of the listener's chains: the most
// downstream connections the listener serves at a time (counted across its chains); more
// are closed at once. 0 means no limit.
func (l *Listener) MaxConnections() uint64 { return l.maxConnections }

// Name returns the listener's name, its identity across configuration changes.
func (l *Listener) Name() string { return l.name }

// Addr returns the IP and port to listen on. Port 0 lets the kernel pick one.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Network returns "tcp4" for an IPv4 address and "tcp6" for an IPv6 one (see V6Only), or
// "udp4" and "udp6" for a UDP listener.
func (l *Listener) Network() string {
	n := "tcp"
	if l.udp != nil {
		n = "udp"
	}
	if l.addr.Addr().Is4() {
		return n + "4"
	}
	return n + "6"
}

// UDP returns the udp_proxy of a UDP listener, nil for a TCP listener (which has filter
// chains instead).
func (l *Listener) UDP() *UDPProxy { return l.udp }

// AccessLog returns the access log of the listener's connections that end before a filter
// chain is chosen (connection limit, bad PROXY header or ClientHello): that of the default
// chain, else of the first chain; for a UDP listener, its udp_proxy's. nil when none.
func (l *Listener) AccessLog() *AccessLog {
	switch {
	case l.udp != nil:
		return l.udp.AccessLog
	case l.defaultChain != nil:
		return l.defaultChain.TCP.AccessLog
	case len(l.chains) > 0:
		return l.chains[0].TCP.AccessLog
	}
	return nil
}

// V6Only reports whether an IPv6 listener must refuse IPv4 clients: true unless the
// listener's socket_address sets ipv4_compat. It is false for IPv4 listeners.
func (l *Listener) V6Only() bool { return l.v6only }

// ProxyProtocol reports whether the listener runs the proxy_protocol listener filter: every
// connection must start with a PROXY protocol header (v1 or v2), whose addresses become the
// connection's source and destination.
func (l *Listener) ProxyProtocol() bool { return l.proxyProtocol }

// TLSInspector reports whether the listener runs the tls_inspector listener filter, which
// reads the ClientHello (SNI, ALPN) of TLS connections without terminating TLS.
func (l *Listener) TLSInspector() bool { return l.tlsInspector }

// Peeks reports whether the listener reads from a client before choosing its chain (it has a
// listener filter). A listener that does not peek connects upstream at once, so protocols in
// which the server speaks first work.
func (l *Listener) Peeks() bool { return l.proxyProtocol || l.tlsInspector }

// FiltersTimeout returns listener_filters_timeout: how long the listener filters may wait for
// the client's bytes; 0 means no limit.
func (l *Listener) FiltersTimeout() time.Duration { return l.filtersTimeout }

// HandshakeTimeout bounds the TLS handshake of a connection whose chain terminates TLS:
// listener_filters_timeout when the listener sets one (not 0), else DefaultHandshakeTimeout.
func (l *Listener) HandshakeTimeout() time.Duration { return l.handshakeTimeout }

// ContinueOnFiltersTimeout reports continue_on_listener_filters_timeout: when the timeout
// passes, choose a chain with what is known so far instead of closing the connection.
func (l *Listener) ContinueOnFiltersTimeout() bool { return l.continueOnTimeout }

// Chains returns the listener's filter chains in configuration order (not the default one).
func (l *Listener) Chains() []*FilterChain { return slices.Clone(l.chains) }

// DefaultChain returns the default_filter_chain, or nil.
func (l *Listener) DefaultChain() *FilterChain { return l.defaultChain }

// Match returns the chain a connection described by in gets, with Envoy's filter_chain_match
// rules (package match): the matching chain, else the default chain, else nil (the
// connection is closed). It does not allocate.
func (l *Listener) Match(in *match.Input) *FilterChain {
	if i := l.matcher.Match(in); i >= 0 {
		return l.chains[i]
	}
	return l.defaultChain
}

// TCP returns the tcp_proxy settings of the default chain, else of the only chain; the zero
// TCPProxy (Cluster nil) when the listener has several chains and no default.
func (l *Listener) TCP() TCPProxy {
	switch {
	case l.defaultChain != nil:
		return l.defaultChain.TCP
	case len(l.chains) == 1:
		return l.chains[0].TCP
	}
	return TCPProxy{}
}

// allChains returns the chains and then the default chain.
func (l *Listener) allChains() []*FilterChain {
	if l.defaultChain == nil {
		return l.chains
	}
	return append(l.chains[:len(l.chains):len(l.chains)], l.defaultChain)
}

// Clusters returns the clusters the listener's chains (or udp_proxy) send to, each once, in
// chain order. The clusters of HTTP chains are in their route tables, not here.
func (l *Listener) Clusters() []*Cluster {
	if l.udp != nil {
		return []*Cluster{l.udp.Cluster}
	}
	var out []*Cluster
	for _, fc := range l.allChains() {
		if fc.TCP.Cluster != nil && !slices.Contains(out, fc.TCP.Cluster) {
			out = append(out, fc.TCP.Cluster)
		}
	}
	return out
}

// TCPProxy is the compiled envoy.filters.network.tcp_proxy filter of a listener.
type TCPProxy struct {
	// Cluster receives the connections; never nil in a built Graph.
	Cluster *Cluster
	// IdleTimeout closes a connection after this long without bytes in either direction;
	// 0 disables it.
	IdleTimeout time.Duration
	// MaxConnectAttempts is how many upstream connections are tried, each on an endpoint
	// not tried yet when there is one, before the downstream connection is given up; at
	// least 1.
	MaxConnectAttempts int
	// HashSourceIP is hash_policy source_ip: a ring hash or Maglev cluster hashes the
	// client's address. Without it such a cluster picks at random, as Envoy does.
	HashSourceIP bool
	// AccessLog, if not nil, gets one line per connection.
	AccessLog *AccessLog
}

// Cluster is one compiled cluster: its endpoints and how to balance over them, check their
// health and limit connections to them (what package upstream runs).
type Cluster struct {
	name           string
	connectTimeout time.Duration
	proxyProtocol  int                       // PROXY protocol version sent to endpoints, 0 for none
	tlsCtx         *tlsv3.UpstreamTlsContext // as parsed; nil for plain TCP
	tls            *tlsconf.Client           // built by Build from tlsCtx and the secrets
	endpoints      []Endpoint
	lb             upstream.ClusterConfig // without Endpoints
	http           clusterHTTP            // HttpProtocolOptions
	retryPercent   float64                // retry_budget.budget_percent
	// retry_budget.min_retry_concurrency
	minRetryConcurrency uint32
}

// Endpoint is one upstream address that takes traffic, with its load-balancing weight.
type Endpoint struct {
	Addr   netip.AddrPort
	Weight uint32
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.name }

// ConnectTimeout returns how long one upstream connection attempt may take.
func (c *Cluster) ConnectTimeout() time.Duration { return c.connectTimeout }

// ProxyProtocol returns the PROXY protocol version (1 or 2) the cluster's transport socket
// sends to its endpoints before any other byte, or 0 when it sends none.
func (c *Cluster) ProxyProtocol() int { return c.proxyProtocol }

// TLS returns the cluster's TLS origination (transport_socket envoy.transport_sockets.tls,
// alone or inside upstream_proxy_protocol, whose PROXY header goes first, in the clear), or
// nil when the cluster speaks plain TCP to its endpoints.
func (c *Cluster) TLS() *tlsconf.Client { return c.tls }

// Endpoints returns a copy of the endpoints that take traffic (healthy or of unknown
// health), in the order the load assignment lists them.
func (c *Cluster) Endpoints() []Endpoint { return slices.Clone(c.endpoints) }

// NumEndpoints returns the number of endpoints that take traffic; 0 means no upstream is
// available.
func (c *Cluster) NumEndpoints() int { return len(c.endpoints) }

// Endpoint returns the i-th endpoint, 0 <= i < NumEndpoints().
func (c *Cluster) Endpoint(i int) Endpoint { return c.endpoints[i] }

// Policy returns the cluster's load-balancing policy (lb_policy).
func (c *Cluster) Policy() upstream.Policy { return c.lb.Policy }

// HashesSource reports whether the cluster's policy hashes the client's address (ring hash
// or Maglev), which is what a hash_policy source_ip feeds.
func (c *Cluster) HashesSource() bool {
	return c.lb.Policy == upstream.RingHash || c.lb.Policy == upstream.Maglev
}

// MaxConnections returns the cluster's circuit breaker: the most active upstream
// connections (for UDP: sessions) at a time; DefaultMaxConnections when CDS sets none.
func (c *Cluster) MaxConnections() uint32 { return c.lb.MaxConnections }

// Upstream returns the configuration package upstream runs for the cluster: policy,
// endpoints, health check, outlier detection and circuit breaker. The result is a fresh
// copy the caller may keep.
func (c *Cluster) Upstream() upstream.ClusterConfig {
	cfg := c.lb
	cfg.Endpoints = make([]upstream.Endpoint, len(c.endpoints))
	for i, e := range c.endpoints {
		cfg.Endpoints[i] = upstream.Endpoint{Addr: e.Addr, Weight: e.Weight}
	}
	if hc := cfg.HealthCheck; hc != nil {
		h := *hc
		if h.TCP != nil {
			t := upstream.TCPCheck{Send: slices.Clone(h.TCP.Send), Expect: slices.Clone(h.TCP.Expect)}
			h.TCP = &t
		}
		if h.HTTP != nil {
			t := *h.HTTP
			t.ExpectedStatuses = slices.Clone(t.ExpectedStatuses)
			h.HTTP = &t
		}
		cfg.HealthCheck = &h
	}
	if o := cfg.Outlier; o != nil {
		v := *o
		cfg.Outlier = &v
	}
	return cfg
}

// setEndpoints installs eps, merging duplicate addresses.
func (c *Cluster) setEndpoints(eps []Endpoint) {
	c.endpoints = mergeEndpoints(eps)
}

// Build validates r and compiles it into an immutable Graph. r must be consistent (see
// Missing). A resource that fails validation is reported as a *ResourceError naming it; a
// set with missing references as the error of Missing. Build never modifies r and keeps no
// reference to its maps.
func Build(r *Resources) (*Graph, error) {
	if r == nil {
		r = &Resources{}
	}
	specs := make([]*listenerSpec, 0, len(r.Listeners))
	for _, name := range sortedKeys(r.Listeners) {
		l := r.Listeners[name]
		spec, err := parseListener(l)
		if err == nil && l.GetName() != name {
			err = fmt.Errorf("resource is named %q but was delivered as %q", l.GetName(), name)
		}
		if err != nil {
			return nil, &ResourceError{TypeURL: resourcev3.ListenerType, Name: name, Err: err}
		}
		specs = append(specs, spec)
	}
	g := &Graph{
		clusters:       make([]*Cluster, 0, len(r.Clusters)),
		clusterByName:  make(map[string]*Cluster, len(r.Clusters)),
		listeners:      make([]*Listener, 0, len(specs)),
		listenerByName: make(map[string]*Listener, len(specs)),
		src: Resources{
			Listeners: maps.Clone(r.Listeners),
			Clusters:  maps.Clone(r.Clusters),
			Endpoints: maps.Clone(r.Endpoints),
			Secrets:   maps.Clone(r.Secrets),
			Routes:    maps.Clone(r.Routes),
		},
		routes: make(map[string]*httproute.Table, len(r.Routes)),
	}
	prevTables := routeTables.get()
	for _, name := range sortedKeys(r.Routes) {
		rc := r.Routes[name]
		if t := prevTables[rc]; t != nil && t.Name == name {
			g.routes[name] = t
			continue
		}
		t, err := parseRouteConfig(rc)
		if err == nil && rc.GetName() != name {
			err = fmt.Errorf("resource is named %q but was delivered as %q", rc.GetName(), name)
		}
		if err != nil {
			return nil, &ResourceError{TypeURL: resourcev3.RouteType, Name: name, Err: err}
		}
		g.routes[name] = t
	}
	routeTables.put(r.Routes, g.routes)
	for _, name := range sortedKeys(r.Clusters) {
		c := r.Clusters[name]
		cl, err := parseCluster(c)
		if err == nil && c.GetName() != name {
			err = fmt.Errorf("resource is named %q but was delivered as %q", c.GetName(), name)
		}
		if err != nil {
			return nil, &ResourceError{TypeURL: resourcev3.ClusterType, Name: name, Err: err}
		}
		g.clusters = append(g.clusters, cl)
		g.clusterByName[name] = cl
	}
	if err := checkHTTPClusters(g); err != nil {
		return nil, err
	}
	eds := make(map[string][]Endpoint, len(r.Endpoints))
	for _, name := range sortedKeys(r.Endpoints) {
		cla := r.Endpoints[name]
		eps, err := parseLoadAssignment(cla)
		if err == nil && cla.GetClusterName() != name {
			err = fmt.Errorf("resource is named %q but was delivered as %q", cla.GetClusterName(), name)
		}
		if err != nil {
			return nil, &ResourceError{TypeURL: resourcev3.EndpointType, Name: name, Err: err}
		}
		eds[name] = eps
	}
	for _, name := range sortedKeys(r.Secrets) {
		sec := r.Secrets[name]
		err := Validate(resourcev3.SecretType, sec)
		if err == nil && sec.GetName() != name {
			err = &ResourceError{TypeURL: resourcev3.SecretType, Name: name,
				Err: fmt.Errorf("resource is named %q but was delivered as %q", sec.GetName(), name)}
		}
		if err != nil {
			return nil, err
		}
	}
	if err := r.Missing(); err != nil {
		return nil, err
	}
	secrets := tlsconf.SecretMap(r.Secrets)
	for _, cl := range g.clusters {
		if cl.tlsCtx == nil {
			continue
		}
		c, err := tlsconf.NewClient(cl.tlsCtx, secrets)
		if err != nil {
			path := "transport_socket.typed_config"
			if r.Clusters[cl.name].GetTransportSocket().GetTypedConfig().GetTypeUrl() == upstreamPPTypeURL {
				path += ".transport_socket.typed_config"
			}
			return nil, &ResourceError{TypeURL: resourcev3.ClusterType, Name: cl.name, Err: fmt.Errorf("%s.%w", path, err)}
		}
		cl.tls = c
	}
	for _, cl := range g.clusters {
		if svc := edsServiceName(r.Clusters[cl.name]); svc != "" {
			cl.setEndpoints(eds[svc])
		}
	}
	// TCP and UDP listeners clash only with their own kind.
	type socketID struct {
		udp  bool
		addr netip.AddrPort
	}
	bound := make(map[socketID]string, len(specs))
	logFormats := map[string]*AccessLog{} // by path: one format per file
	for _, s := range specs {
		if s.addr.Port() != 0 {
			id := socketID{udp: s.udp != nil, addr: s.addr}
			if other, ok := bound[id]; ok {
				return nil, &ResourceError{TypeURL: resourcev3.ListenerType, Name: s.name,
					Err: fmt.Errorf("address %s is already used by listener %q", s.addr, other)}
			}
			bound[id] = s.name
		}
		for _, al := range s.accessLogs() {
			if prev, ok := logFormats[al.Path]; ok && prev.Format.String() != al.Format.String() {
				return nil, &ResourceError{TypeURL: resourcev3.ListenerType, Name: s.name,
					Err: fmt.Errorf("access log %s is written with two formats (%q and %q); flotilla-agent needs one format per file", al.Path, prev.Format, al.Format)}
			}
			logFormats[al.Path] = al
		}
		l := &Listener{
			name:              s.name,
			addr:              s.addr,
			v6only:            s.v6only,
			proxyProtocol:     s.proxyProtocol,
			tlsInspector:      s.tlsInspector,
			filtersTimeout:    s.filtersTimeout,
			handshakeTimeout:  s.handshakeTimeout,
			continueOnTimeout: s.continueOnTimeout,
			matcher:           s.matcher,
			maxConnections:    s.maxConnections,
		}
		if u := s.udp; u != nil {
			l.udp = &UDPProxy{Cluster: g.clusterByName[u.cluster], IdleTimeout: u.idleTimeout, HashSourceIP: u.hashSource, AccessLog: u.accessLog}
		}
		link := func(c chainSpec, srv *tlsconf.Server) *FilterChain {
			if c.http != nil {
				return &FilterChain{Name: c.name, Match: c.cond, TLS: srv, HTTP: c.http, TCP: TCPProxy{AccessLog: c.accessLog}}
			}
			return &FilterChain{Name: c.name, Match: c.cond, TLS: srv, TCP: TCPProxy{
				Cluster:            g.clusterByName[c.cluster],
				IdleTimeout:        c.idleTimeout,
				MaxConnectAttempts: c.attempts,
				HashSourceIP:       c.hashSource,
				AccessLog:          c.accessLog,
			}}
		}
		for i, c := range s.chains {
			srv, err := newServer(c, secrets, chainPath(i, len(s.chains)))
			if err != nil {
				return nil, &ResourceError{TypeURL: resourcev3.ListenerType, Name: s.name, Err: err}
			}
			l.chains = append(l.chains, link(c, srv))
		}
		if s.defaultChain.present() {
			srv, err := newServer(s.defaultChain, secrets, chainPath(len(s.chains), len(s.chains)))
			if err != nil {
				return nil, &ResourceError{TypeURL: resourcev3.ListenerType, Name: s.name, Err: err}
			}
			l.defaultChain = link(s.defaultChain, srv)
		}
		g.listeners = append(g.listeners, l)
		g.listenerByName[l.name] = l
	}
	return g, nil
}

// checkHTTPClusters rejects a route configuration that forwards HTTP to a cluster whose
// transport socket sends the PROXY protocol: the HTTP engine pools upstream connections
// and shares them between clients, so no PROXY header could name the right one. Envoy keys
// its pools by the downstream address instead; flotilla-agent supports the PROXY protocol
// towards upstreams for tcp_proxy only, and says so rather than dropping the header.
func checkHTTPClusters(g *Graph) error {
	for _, name := range sortedKeys(g.routes) {
		t := g.routes[name]
		for i, vh := range t.VirtualHosts {
			for j, r := range vh.Routes {
				if r.Forward == nil {
					continue
				}
				for _, wc := range r.Forward.Clusters {
					c := g.clusterByName[wc.Name]
					if c == nil || c.proxyProtocol == 0 {
						continue
					}
					return &ResourceError{TypeURL: resourcev3.RouteType, Name: name, Err: fmt.Errorf(
						"virtual_hosts[%d].routes[%d].route: cluster %q sends the PROXY protocol (upstream_proxy_protocol transport socket), which flotilla-agent supports for tcp_proxy only: HTTP connections to endpoints are pooled and shared by clients",
						i, j, wc.Name)}
				}
			}
		}
	}
	return nil
}
