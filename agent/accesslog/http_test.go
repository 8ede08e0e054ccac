package accesslog_test

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
)

// httpEntry is one proxied HTTP request.
var httpEntry = accesslog.Entry{
	Start:                time.Date(2026, 11, 21, 10, 0, 1, 250e6, time.UTC),
	Duration:             42 * time.Millisecond,
	Client:               netip.MustParseAddrPort("192.0.2.7:40000"),
	Server:               netip.MustParseAddrPort("127.0.0.1:8080"),
	Protocol:             "HTTP/1.1",
	Status:               200,
	BytesSent:            1024,
	BytesReceived:        3,
	Upstream:             netip.MustParseAddrPort("10.0.0.1:80"),
	Listener:             "web",
	Cluster:              "backend",
	Method:               "GET",
	RequestURI:           "/api/x?y=1",
	Host:                 "api.example",
	Scheme:               "http",
	Route:                "api",
	UpstreamResponseTime: 40 * time.Millisecond,
	RequestHeader: http.Header{
		"Referer":         {"https://ref.example/"},
		"User-Agent":      {"curl/8.0"},
		"X-Forwarded-For": {"198.51.100.1"},
		"X-Canary":        {"1"},
	},
	ResponseHeader: http.Header{"Content-Type": {"text/plain"}},
}

func TestHTTPFormats(t *testing.T) {
	tests := []struct {
		name, format string
		entry        accesslog.Entry
		want         string
	}{
		{"combined", "combined", httpEntry,
			`192.0.2.7 - - [21/Nov/2026:10:00:01 +0000] "GET /api/x?y=1 HTTP/1.1" 200 1024 "https://ref.example/" "curl/8.0" 10.0.0.1:80 0.040 0.042`},
		{"headers", `$host $http_x_canary $sent_http_content_type $http_x_absent $route $cluster $http_x_forwarded_for`, httpEntry,
			`api.example 1 text/plain - api backend 198.51.100.1`},
		{"no upstream", `"$request" $upstream_addr $upstream_response_time`,
			accesslog.Entry{Method: "GET", RequestURI: "/", Protocol: "HTTP/2", Status: 404},
			`"GET / HTTP/2" - -`},
		{"hostile path", `"$request"`, accesslog.Entry{Method: "GET", RequestURI: "/\"x", Protocol: "HTTP/1.1"},
			`"GET /\x22x HTTP/1.1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := accesslog.ParseFormat(tt.format)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(f.Append(nil, &tt.entry)); got != tt.want {
				t.Errorf("line\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestHTTPEnvoyRoundTrip: what the control plane sends for a format prints, in the agent,
// the same fields (durations in milliseconds, as Envoy).
func TestHTTPEnvoyRoundTrip(t *testing.T) {
	text, _, err := accesslog.ToEnvoyHTTP("combined")
	if err != nil {
		t.Fatal(err)
	}
	want := `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% - - [%START_TIME(%d/%b/%Y:%H:%M:%S %z)%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %BYTES_SENT% "%REQ(REFERER)%" "%REQ(USER-AGENT)%" %UPSTREAM_HOST% %RESPONSE_DURATION% %DURATION%` + "\n"
	if text != want {
		t.Fatalf("ToEnvoyHTTP(combined) =\n %q\nwant\n %q", text, want)
	}
	f, err := accesslog.ParseEnvoyFormat(text, nil)
	if err != nil {
		t.Fatal(err)
	}
	line := string(f.Append(nil, &httpEntry))
	wantLine := `192.0.2.7 - - [21/Nov/2026:10:00:01 +0000] "GET /api/x?y=1 HTTP/1.1" 200 1024 "https://ref.example/" "curl/8.0" 10.0.0.1:80 40 42`
	if line != wantLine {
		t.Errorf("line\n got %s\nwant %s", line, wantLine)
	}

	text, _, err = accesslog.ToEnvoy(`$http_x_canary $sent_http_content_type $route`)
	if err != nil || text != "%REQ(X-CANARY)% %RESP(CONTENT-TYPE)% %ROUTE_NAME%\n" {
		t.Fatalf("ToEnvoy(headers) = %q, %v", text, err)
	}

	f, err = accesslog.ParseEnvoyFormat("%REQ(X-MISSING?:AUTHORITY)% %REQ(USER-AGENT):4% %REQ(:SCHEME)% %RESP(X-NONE)%", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(f.Append(nil, &httpEntry)); got != "api.example curl http -" {
		t.Errorf("alternatives and lengths: %q", got)
	}
}

func TestHTTPJSON(t *testing.T) {
	t.Run("json lines", func(t *testing.T) {
		f, err := accesslog.ParseFormat("json")
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(f.Append(nil, &httpEntry), &m); err != nil {
			t.Fatal(err)
		}
		if m["request_method"] != "GET" || m["request_uri"] != "/api/x?y=1" || m["route"] != "api" ||
			m["upstream_response_time"] != 0.04 || m["http_user_agent"] != "curl/8.0" || m["protocol"] != "HTTP/1.1" {
			t.Errorf("line = %v", m)
		}
	})
	t.Run("envoy json", func(t *testing.T) {
		_, js, err := accesslog.ToEnvoyHTTP("json")
		if err != nil {
			t.Fatal(err)
		}
		if js["request_uri"] != "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" || js["remote_addr"] == "" {
			t.Fatalf("ToEnvoyHTTP(json) = %v", js)
		}
		f, err := accesslog.ParseEnvoyFormat("", js)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		line := f.Append(nil, &httpEntry)
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if m["request_method"] != "GET" || m["upstream_response_time"] != 40.0 || m["route"] != "api" || m["http_referer"] != "https://ref.example/" {
			t.Errorf("line = %s", line)
		}
	})
}

// FuzzParseEnvoyFormat checks that any Envoy format (as an xDS server may send) either fails
// to parse or prints every entry without panicking, JSON formats as valid JSON.
func FuzzParseEnvoyFormat(f *testing.F) {
	for _, s := range []string{"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):10%", "%RESP(X)%", "%REQ(", "%REQ()%",
		"%REQ(A?B?C)%", "%REQ(A):0%", "%RESPONSE_DURATION% %ROUTE_NAME%", "%START_TIME(%s.%3f)%", "%%"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, asJSON bool) {
		var (
			fm  *accesslog.Format
			err error
		)
		if asJSON {
			fm, err = accesslog.ParseEnvoyFormat("", map[string]string{"k": s, "z": "%RESPONSE_CODE%"})
		} else {
			fm, err = accesslog.ParseEnvoyFormat(s, nil)
		}
		if err != nil {
			return
		}
		for _, e := range []*accesslog.Entry{&httpEntry, &envoyEntry, {}} {
			line := fm.Append(nil, e)
			if asJSON && !json.Valid(line) {
				t.Fatalf("invalid JSON line %q", line)
			}
		}
	})
}
