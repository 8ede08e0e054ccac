package httpproxy_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/flotilla-proxy/flotilla/agent/httpproxy"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/tlsconf"
)

// TestHTTP2 covers the protocol pairs: HTTP/2 over TLS (ALPN) and h2c downstream, HTTP/1.1
// and HTTP/2 (h2c) upstream.
func TestHTTP2(t *testing.T) {
	be := startBackend(t, echoHandler("be"))
	ca := runtimetest.NewCA("test CA")
	cert := ca.KeyPair("proxy", false, "localhost")
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	for _, tt := range []struct {
		name       string
		tls        bool
		client     func(*http.Transport)
		upH2       bool
		wantDown   int
		wantUp     string
		wantScheme string
	}{
		{"h2 over TLS to HTTP/1.1", true, func(tr *http.Transport) { tr.Protocols.SetHTTP2(true) }, false, 2, "HTTP/1.1", "https"},
		{"HTTP/1.1 over TLS", true, func(tr *http.Transport) { tr.Protocols.SetHTTP1(true) }, false, 1, "HTTP/1.1", "https"},
		{"h2c to h2c", false, func(tr *http.Transport) { tr.Protocols.SetUnencryptedHTTP2(true) }, true, 2, "HTTP/2.0", "http"},
		{"HTTP/1.1 to h2c", false, func(tr *http.Transport) { tr.Protocols.SetHTTP1(true) }, true, 1, "HTTP/2.0", "http"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stls *tls.Config
			if tt.tls {
				stls = serverTLS
			}
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "be"))}, stls,
				cluster{Cluster: httpproxy.Cluster{Name: "be", HTTP2: tt.upH2}, endpoints: []string{be.addr}})
			tr := &http.Transport{Protocols: &http.Protocols{}, TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}}
			tt.client(tr)
			defer tr.CloseIdleConnections()
			scheme := "http"
			if tt.tls {
				scheme = "https"
			}
			resp, body := do(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, newRequest(t, "GET", scheme+"://"+p.addr+"/x", nil))
			var e echoed
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
			}
			if resp.ProtoMajor != tt.wantDown || e.Proto != tt.wantUp {
				t.Errorf("downstream HTTP/%d upstream %s, want HTTP/%d and %s", resp.ProtoMajor, e.Proto, tt.wantDown, tt.wantUp)
			}
			if got := e.Header.Get("X-Forwarded-Proto"); got != tt.wantScheme {
				t.Errorf("X-Forwarded-Proto = %q, want %q", got, tt.wantScheme)
			}
		})
	}
}

// TestGRPC proxies grpc-go unary and server-streaming calls over h2c both ways, with the
// status in trailers intact.
func TestGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("greeter", healthpb.HealthCheckResponse_SERVING)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	route := fwd("grpc", "/", "greeter")
	route.Match.GRPC = true
	route.Forward.Timeout = 0 // streams outlive any response-header timeout
	p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(route)}, nil,
		cluster{Cluster: httpproxy.Cluster{Name: "greeter", HTTP2: true}, endpoints: []string{ln.Addr().String()}})
	cc, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "greeter"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary Check = %v, %v", resp, err)
	}
	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Check(nope) = %v, want NotFound (from the trailers)", err)
	}

	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "greeter"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch message = %v, %v", first, err)
	}
	hs.SetServingStatus("greeter", healthpb.HealthCheckResponse_NOT_SERVING)
	next, err := stream.Recv()
	if err != nil || next.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("streamed update = %v, %v", next, err)
	}
}

// TestTLSOrigination: https upstreams, HTTP/1.1 and HTTP/2 by ALPN, verified by the CA.
func TestTLSOrigination(t *testing.T) {
	ca := runtimetest.NewCA("upstream CA")
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var protos http.Protocols
			protos.SetHTTP1(true)
			protos.SetHTTP2(true)
			bs := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: echoHandler("tls"), Protocols: &protos, TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.KeyPair("backend", false, "backend.example")}}}
			go bs.ServeTLS(ln, "", "")
			t.Cleanup(func() { bs.Close() })
			client, err := tlsconf.NewClient(runtimetest.UpstreamTLSContext("backend.example", ca.PEM, "", ""), nil)
			if err != nil {
				t.Fatal(err)
			}
			p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "tls"))}, nil,
				cluster{Cluster: httpproxy.Cluster{Name: "tls", TLS: client, HTTP2: h2}, endpoints: []string{ln.Addr().String()}})
			resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/secure"), nil))
			var e echoed
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
			}
			want := "HTTP/1.1"
			if h2 {
				want = "HTTP/2.0"
			}
			if e.Proto != want || e.Path != "/secure" {
				t.Errorf("backend saw %s %s, want %s /secure", e.Proto, e.Path, want)
			}
		})
	}
	t.Run("wrong CA is a 502", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		other := runtimetest.NewCA("other CA")
		bs := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: echoHandler("tls"), TLSConfig: &tls.Config{Certificates: []tls.Certificate{other.KeyPair("backend", false, "backend.example")}}}
		go bs.ServeTLS(ln, "", "")
		t.Cleanup(func() { bs.Close() })
		client, err := tlsconf.NewClient(runtimetest.UpstreamTLSContext("backend.example", ca.PEM, "", ""), nil)
		if err != nil {
			t.Fatal(err)
		}
		p := startProxy(t, &httpproxy.Config{Listener: "web", Manager: manager(), Table: table(fwd("r", "/", "tls"))}, nil,
			cluster{Cluster: httpproxy.Cluster{Name: "tls", TLS: client}, endpoints: []string{ln.Addr().String()}})
		if resp, body := do(t, noRedirect(), newRequest(t, "GET", p.url("/"), nil)); resp.StatusCode != 502 {
			t.Errorf("got %d %q, want 502", resp.StatusCode, body)
		}
	})
}
