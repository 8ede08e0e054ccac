package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// grpcTestServer implements the unary and server-streaming calls of
// grpc.testing.TestService: the answers carry the server's id in the payload
// and a custom header and trailer; a request with response_status ends the
// call with that status.
type grpcTestServer struct {
	testgrpc.UnimplementedTestServiceServer
	id string
}

func (s *grpcTestServer) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("x-server", s.id))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "unary-"+s.id))
	if st := req.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	body := append([]byte(s.id+":"), req.GetPayload().GetBody()...)
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: body}}, nil
}

func (s *grpcTestServer) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	stream.SetTrailer(metadata.Pairs("x-trailer", "stream-"+s.id))
	for i, p := range req.GetResponseParameters() {
		if d := p.GetIntervalUs(); d > 0 {
			time.Sleep(time.Duration(d) * time.Microsecond) // the pace the client asked for
		}
		body := fmt.Appendf(nil, "%s:%d:%s", s.id, i, req.GetPayload().GetBody())
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
	if st := req.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return nil
}

// startGRPCBackend serves grpcTestServer on a free loopback port (h2c) and
// returns its address; it stops at cleanup.
func startGRPCBackend(t *testing.T, id string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, &grpcTestServer{id: id})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// TestHTTPGRPCThroughAgent: grpc-go unary and server-streaming calls through
// an http listener (h2c downstream, and h2 over TLS) to a cluster with
// protocol http2, with response headers, trailers and non-OK statuses intact.
func TestHTTPGRPCThroughAgent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	backend := startGRPCBackend(t, "g1")
	ca := newTestCA(t)
	ca.issue(t, dir, "grpc", "grpc.example")
	cp := startControlPlane(t)
	ag := startAgent(t, cp, "a1", "dc=ams")
	listen, secure := freeAddr(t), freeAddr(t)
	cp.apply(t, writeConfig(t, dir, "grpc.yaml", fmt.Sprintf(`
listeners:
  - name: grpc
    address: %q
    http:
      routes:
        - { name: grpc, match: { prefix: /, grpc: true }, cluster: greeter, timeout: 0s }
        - { name: other, match: { prefix: / }, direct_response: { status: 404, body: "not grpc\n" } }
  - name: grpcs
    address: %q
    tls:
      certificates: [{ cert: grpc.crt, key: grpc.key }]
    http:
      routes:
        - { name: grpc, match: { prefix: /, grpc: true }, cluster: greeter }
clusters:
  - name: greeter
    protocol: http2
    endpoints: [%q]
`, listen, secure, backend)), "grpc through the agent")
	ag.waitReady(t)

	conn, err := grpc.NewClient("passthrough:///"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := testgrpc.NewTestServiceClient(conn)
	call := func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, metadata.MD, metadata.MD, error) {
		var header, trailer metadata.MD
		resp, err := client.UnaryCall(ctx, req, grpc.Header(&header), grpc.Trailer(&trailer))
		return resp, header, trailer, err
	}
	waitFor(t, convergeTimeout, "a unary call through the agent", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, _, _, err := call(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}})
		return err
	})

	t.Run("unary", func(t *testing.T) {
		tests := []struct {
			name    string
			status  *testgrpc.EchoStatus
			want    codes.Code
			wantMsg string
		}{
			{name: "ok", want: codes.OK},
			{name: "error status", status: &testgrpc.EchoStatus{Code: int32(codes.ResourceExhausted), Message: "quota: 0 left ✗"},
				want: codes.ResourceExhausted, wantMsg: "quota: 0 left ✗"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				resp, header, trailer, err := call(ctx, &testgrpc.SimpleRequest{
					Payload: &testgrpc.Payload{Body: []byte("hello")}, ResponseStatus: tt.status})
				st, _ := status.FromError(err)
				if st.Code() != tt.want || st.Message() != tt.wantMsg {
					t.Fatalf("status %v %q, want %v %q (err %v)", st.Code(), st.Message(), tt.want, tt.wantMsg, err)
				}
				if tt.want == codes.OK {
					if got := string(resp.GetPayload().GetBody()); got != "g1:hello" {
						t.Errorf("payload %q, want g1:hello", got)
					}
					if got := header.Get("x-server"); len(got) != 1 || got[0] != "g1" {
						t.Errorf("response header x-server %q, want [g1]", got)
					}
				}
				if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "unary-g1" {
					t.Errorf("trailer x-trailer %q, want [unary-g1] (trailers: %v)", got, trailer)
				}
			})
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		tests := []struct {
			name   string
			n      int
			status *testgrpc.EchoStatus
			want   codes.Code
		}{
			{name: "ok", n: 5, want: codes.OK},
			{name: "error after messages", n: 3, status: &testgrpc.EchoStatus{Code: int32(codes.Aborted), Message: "stream aborted"}, want: codes.Aborted},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req := &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("s")}, ResponseStatus: tt.status}
				for range tt.n {
					// 20ms apart: the messages must arrive one by one, not buffered to the end.
					req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{IntervalUs: 20000})
				}
				stream, err := client.StreamingOutputCall(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				var arrivals []time.Time
				for {
					m, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						err = nil
					}
					if err != nil || m == nil {
						if st, _ := status.FromError(err); st.Code() != tt.want {
							t.Fatalf("stream ended with %v, want %v", err, tt.want)
						}
						break
					}
					got = append(got, string(m.GetPayload().GetBody()))
					arrivals = append(arrivals, time.Now())
				}
				if len(got) != tt.n {
					t.Fatalf("got %d messages %q, want %d", len(got), got, tt.n)
				}
				for i, m := range got {
					if want := fmt.Sprintf("g1:%d:s", i); m != want {
						t.Errorf("message %d = %q, want %q", i, m, want)
					}
				}
				if tt.n > 1 && arrivals[tt.n-1].Sub(arrivals[0]) < 10*time.Millisecond*time.Duration(tt.n-1) {
					t.Errorf("the %d messages arrived within %v: buffered instead of streamed", tt.n, arrivals[tt.n-1].Sub(arrivals[0]))
				}
				if tr := stream.Trailer().Get("x-trailer"); len(tr) != 1 || tr[0] != "stream-g1" {
					t.Errorf("trailer x-trailer %q, want [stream-g1]", tr)
				}
			})
		}
	})

	t.Run("unary over TLS", func(t *testing.T) {
		// HTTP/2 negotiated by ALPN on a TLS listener.
		conn, err := grpc.NewClient("passthrough:///"+secure,
			grpc.WithTransportCredentials(credentials.NewTLS(ca.clientConfig("grpc.example"))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var trailer metadata.MD
		var resp *testgrpc.SimpleResponse
		waitFor(t, convergeTimeout, "a unary call over TLS", func() (err error) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			resp, err = testgrpc.NewTestServiceClient(conn).UnaryCall(ctx,
				&testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("tls")}}, grpc.Trailer(&trailer))
			return err
		})
		if got := string(resp.GetPayload().GetBody()); got != "g1:tls" {
			t.Errorf("payload %q, want g1:tls", got)
		}
		if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "unary-g1" {
			t.Errorf("trailer x-trailer %q, want [unary-g1]", got)
		}
	})
}
