package xdsclient_test

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/flotilla-proxy/flotilla/agent/runtime"
	"github.com/flotilla-proxy/flotilla/agent/runtime/runtimetest"
	"github.com/flotilla-proxy/flotilla/agent/xdsclient"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDecode(t *testing.T) {
	web := runtimetest.Listener("web", "127.0.0.1", 10001, "backend")
	withFilters := proto.Clone(web).(*listenerv3.Listener)
	withFilters.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector"}}
	unnamed := proto.Clone(web).(*listenerv3.Listener)
	unnamed.Name = ""
	unknown := mustAny(t, web)
	// Field 999 of Listener does not exist in this build's protos.
	unknown.Value = protowire.AppendBytes(protowire.AppendTag(unknown.Value, 999, protowire.BytesType), []byte("x"))
	garbage := &anypb.Any{TypeUrl: xdsclient.ListenerType, Value: []byte{0xff, 0xff}}

	for _, tc := range []struct {
		name    string
		typeURL string
		in      []*anypb.Any
		want    []string // resource names
		wantErr []string // substrings of the error
	}{
		{"listeners", lds, []*anypb.Any{mustAny(t, web), mustAny(t, runtimetest.Listener("db", "127.0.0.1", 10002, "mysql"))}, []string{"db", "web"}, nil},
		{"clusters", cds, []*anypb.Any{mustAny(t, runtimetest.EDSCluster("backend"))}, []string{"backend"}, nil},
		{"endpoints by cluster_name", eds, []*anypb.Any{mustAny(t, runtimetest.LoadAssignment("backend", runtimetest.Endpoint("127.0.0.1:1", 1)))}, []string{"backend"}, nil},
		{"empty", lds, nil, []string{}, nil},
		{"unsupported type", "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration", nil, nil, []string{"not supported"}},
		{"wrong type in response", lds, []*anypb.Any{mustAny(t, runtimetest.EDSCluster("backend"))}, nil, []string{"listener: resource 0", "envoy.config.cluster.v3.Cluster"}},
		{"undecodable", lds, []*anypb.Any{garbage}, nil, []string{"resource 0"}},
		{"no name", lds, []*anypb.Any{mustAny(t, unnamed)}, nil, []string{"listener: resource 0: name is empty"}},
		{"duplicate", lds, []*anypb.Any{mustAny(t, web), mustAny(t, web)}, nil, []string{`listener "web": sent more than once`}},
		{"unknown field", lds, []*anypb.Any{unknown}, nil, []string{`"web"`, "999"}},
		{"runtime rejects", lds, []*anypb.Any{mustAny(t, withFilters)}, nil, []string{`"web"`, "listener_filters"}},
		{"every error listed", lds, []*anypb.Any{mustAny(t, unnamed), mustAny(t, withFilters)}, nil, []string{"name is empty", "listener_filters"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := xdsclient.Decode(tc.typeURL, tc.in)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Decode succeeded with %v", xdsclient.SortedNames(got))
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if names := xdsclient.SortedNames(got); strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Errorf("names = %v, want %v", names, tc.want)
			}
		})
	}
}

func TestPutGetRoundTrip(t *testing.T) {
	set := &runtime.Resources{}
	for _, typ := range xdsclient.Types {
		msgs := map[string]proto.Message{}
		switch typ {
		case lds:
			msgs["web"] = runtimetest.Listener("web", "127.0.0.1", 1, "c")
		case cds:
			msgs["c"] = runtimetest.EDSCluster("c")
		case eds:
			msgs["c"] = runtimetest.LoadAssignment("c", runtimetest.Endpoint("127.0.0.1:2", 1))
		case sds:
			sec := runtimetest.CertSecret(runtimetest.NewCA("ca").Issue("db", false, "db.example"))
			msgs[sec.GetName()] = sec
		case xdsclient.RouteType:
			msgs["web"] = runtimetest.RouteConfig("web", runtimetest.VirtualHost("web", []string{"*"}, runtimetest.PrefixRoute("/", "c")))
		}
		xdsclient.Put(set, typ, msgs)
		got := xdsclient.Get(set, typ)
		if len(got) != 1 {
			t.Fatalf("%s: Get = %v", xdsclient.ShortName(typ), got)
		}
		for n, m := range msgs {
			if got[n] != m {
				t.Errorf("%s %q: Get returned another message", xdsclient.ShortName(typ), n)
			}
		}
	}
	if len(xdsclient.Get(nil, lds)) != 0 {
		t.Error("Get(nil) is not empty")
	}
}
