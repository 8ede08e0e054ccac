package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"github.com/flotilla-proxy/flotilla/controlplane/xds"
)

// sinkCommand is `fleetload sink`: the least an xDS server can be on
// grpc-go, to measure what grpc-go's transport costs per agent apart from
// the control plane. It serves ADS on a gRPC server with the control plane's
// options (keepalive, stream limit), answers the first request of each type
// on a stream with an empty response, and only reads the ACKs after that:
// agents end up synced and idle, each on one connection with one stream, and
// the server keeps nothing per stream but the stream. /debug/pprof/ on --http
// serves its memory statistics, as the control plane's --pprof does.
func sinkCommand(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	xdsAddr := fs.String("xds", "127.0.0.1:0", "`address` to serve ADS on")
	httpAddr := fs.String("http", "127.0.0.1:0", "`address` of /debug/pprof/")
	addrFile := fs.String("addr-file", "", "write the ADS and HTTP addresses (a line each) to this `file` once serving")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *xdsAddr)
	if err != nil {
		return fmt.Errorf("xds listener: %w", err)
	}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		lis.Close()
		return fmt.Errorf("http listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(hl) //nolint:errcheck // ends with Close
	defer hs.Close()

	// The control plane's xDS port options (its codec sends these plain
	// responses as protobuf).
	g := grpc.NewServer(xds.ServerOptions()...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, sink{})
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(lis.Addr().String()+"\n"+hl.Addr().String()+"\n"), 0o644); err != nil {
			return fmt.Errorf("--addr-file: %w", err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			return fmt.Errorf("--addr-file: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		g.Stop()
	}()
	if err := g.Serve(lis); err != nil && ctx.Err() == nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// sink is the ADS service of `fleetload sink`.
type sink struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
}

// StreamAggregatedResources answers each type's first request (no nonce)
// with an empty response and reads everything else.
func (sink) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		if req.GetResponseNonce() != "" {
			continue
		}
		if err := st.Send(&discoveryv3.DiscoveryResponse{TypeUrl: req.GetTypeUrl(), VersionInfo: "1", Nonce: "1"}); err != nil {
			return err
		}
	}
}
