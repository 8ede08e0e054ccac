package accesslog_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-proxy/flotilla/agent/accesslog"
)

// envoyEntry is a TCP connection that reached an upstream, started at a fixed time.
var envoyEntry = accesslog.Entry{
	Start:                 time.Date(2026, 11, 21, 10, 0, 1, 250e6, time.FixedZone("", 3600)),
	Duration:              1500 * time.Millisecond,
	Client:                netip.MustParseAddrPort("192.0.2.7:40000"),
	Server:                netip.MustParseAddrPort("[2001:db8::1]:443"),
	Protocol:              "TCP",
	Status:                200,
	BytesSent:             10,
	BytesReceived:         20,
	Upstream:              netip.MustParseAddrPort("10.0.0.1:8443"),
	UpstreamBytesSent:     20,
	UpstreamBytesReceived: 10,
	UpstreamConnectTime:   3 * time.Millisecond,
	SNI:                   "a.example",
	Listener:              "web",
	Cluster:               "backend",
	FilterChain:           "default",
}

func TestEnvoyOperatorTable(t *testing.T) {
	vars := []string{"remote_addr", "remote_port", "server_addr", "server_port", "protocol", "status",
		"bytes_sent", "bytes_received", "session_time", "upstream_addr", "upstream_bytes_sent",
		"upstream_bytes_received", "upstream_connect_time", "ssl_preread_server_name", "time_local",
		"time_iso8601", "listener", "cluster", "filter_chain", "start_time", "msec"}
	for _, v := range vars {
		t.Run(v, func(t *testing.T) {
			op, ok := accesslog.EnvoyOperator("$" + v)
			if !ok {
				t.Fatalf("EnvoyOperator(%q) has no operator", v)
			}
			back, ok := accesslog.NginxVar(op)
			if !ok || back != v {
				t.Errorf("NginxVar(%q) = %q, %v; want %q", op, back, ok, v)
			}
			if _, err := accesslog.ParseEnvoyFormat(op, nil); err != nil {
				t.Errorf("ParseEnvoyFormat(%q) = %v", op, err)
			}
		})
	}
	if op, _ := accesslog.EnvoyOperator("session_time"); op != "%DURATION%" {
		t.Errorf("session_time → %q, want %%DURATION%%", op)
	}
	if _, ok := accesslog.EnvoyOperator("$nope"); ok {
		t.Error("EnvoyOperator($nope) found an operator")
	}
	if _, ok := accesslog.NginxVar("%DOWNSTREAM_REMOTE_ADDRESS%"); ok {
		t.Error("NginxVar(%DOWNSTREAM_REMOTE_ADDRESS%) has a variable, want none")
	}
}

func TestParseEnvoyFormatText(t *testing.T) {
	tests := []struct {
		name, format string
		entry        accesslog.Entry
		want         string
	}{
		{"addresses and numbers",
			"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%:%DOWNSTREAM_REMOTE_PORT% -> %DOWNSTREAM_LOCAL_ADDRESS% %PROTOCOL% %RESPONSE_CODE% %BYTES_SENT% %BYTES_RECEIVED%\n",
			envoyEntry, "192.0.2.7:40000 -> [2001:db8::1]:443 TCP 200 10 20"},
		{"durations are milliseconds", "%DURATION% %UPSTREAM_CONNECTION_POOL_READY_DURATION%", envoyEntry, "1500 3"},
		{"upstream and names",
			"%UPSTREAM_HOST% %UPSTREAM_WIRE_BYTES_SENT% %UPSTREAM_WIRE_BYTES_RECEIVED% %REQUESTED_SERVER_NAME% %DYNAMIC_METADATA(flotilla:listener)% %UPSTREAM_CLUSTER% %FILTER_CHAIN_NAME%",
			envoyEntry, "10.0.0.1:8443 20 10 a.example web backend default"},
		{"times are the start, in UTC",
			"%START_TIME% [%START_TIME(%d/%b/%Y:%H:%M:%S %z)%] %START_TIME(%Y-%m-%dT%H:%M:%S%z)% %START_TIME(%s.%3f)%",
			envoyEntry, "2026-11-21T09:00:01.250Z [21/Nov/2026:09:00:01 +0000] 2026-11-21T09:00:01+0000 1795251601.250"},
		{"absent values are dashes", "%UPSTREAM_HOST% %UPSTREAM_CONNECTION_POOL_READY_DURATION% %REQUESTED_SERVER_NAME% %FILTER_CHAIN_NAME%",
			accesslog.Entry{Status: 503}, "- - - -"},
		{"hostile SNI is escaped", "%REQUESTED_SERVER_NAME%", accesslog.Entry{SNI: "a\"\nb"}, `a\x22\x0Ab`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := accesslog.ParseEnvoyFormat(tt.format, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(f.Append(nil, &tt.entry)); got != tt.want {
				t.Errorf("line\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestParseEnvoyFormatJSON(t *testing.T) {
	f, err := accesslog.ParseEnvoyFormat("", map[string]string{
		"status":   "%RESPONSE_CODE%",
		"client":   "%DOWNSTREAM_REMOTE_ADDRESS%",
		"duration": "%DURATION%",
		"upstream": "%UPSTREAM_HOST%",
		"sni":      "%REQUESTED_SERVER_NAME%",
		"route":    "%DYNAMIC_METADATA(flotilla:listener)%/%UPSTREAM_CLUSTER%",
		"connect":  "%UPSTREAM_CONNECTION_POOL_READY_DURATION%",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := string(f.Append(nil, &envoyEntry))
	want := `{"client":"192.0.2.7:40000","connect":3,"duration":1500,"route":"web/backend","sni":"a.example","status":200,"upstream":"10.0.0.1:8443"}`
	if got != want {
		t.Errorf("line\n got %s\nwant %s", got, want)
	}
	absent := string(f.Append(nil, &accesslog.Entry{Status: 502}))
	wantAbsent := `{"client":null,"connect":null,"duration":0,"route":"-/-","sni":null,"status":502,"upstream":null}`
	if absent != wantAbsent {
		t.Errorf("line without upstream\n got %s\nwant %s", absent, wantAbsent)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(got), &m); err != nil {
		t.Errorf("not JSON: %v", err)
	}
}

func TestToEnvoyRoundTrip(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		text, m, err := accesslog.ToEnvoy("json")
		if err != nil || text != "" {
			t.Fatalf("ToEnvoy(json) = %q, %v, %v", text, m, err)
		}
		if m["session_time"] != "%DURATION%" || m["remote_addr"] != "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" || m["listener"] == "" {
			t.Errorf("ToEnvoy(json) = %v", m)
		}
		f, err := accesslog.ParseEnvoyFormat("", m)
		if err != nil {
			t.Fatal(err)
		}
		var line map[string]any
		if err := json.Unmarshal(f.Append(nil, &envoyEntry), &line); err != nil {
			t.Fatal(err)
		}
		if line["session_time"] != 1500.0 || line["listener"] != "web" || line["remote_port"] != 40000.0 {
			t.Errorf("line = %v", line)
		}
	})
	t.Run("text", func(t *testing.T) {
		text, m, err := accesslog.ToEnvoy(`$remote_addr "$upstream_addr" $status ${session_time}ms`)
		if err != nil || m != nil {
			t.Fatalf("ToEnvoy = %v, %v", m, err)
		}
		want := `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "%UPSTREAM_HOST%" %RESPONSE_CODE% %DURATION%ms` + "\n"
		if text != want {
			t.Fatalf("ToEnvoy =\n %q\nwant\n %q", text, want)
		}
		f, err := accesslog.ParseEnvoyFormat(text, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(f.Append(nil, &envoyEntry)); got != `192.0.2.7 "10.0.0.1:8443" 200 1500ms` {
			t.Errorf("line = %s", got)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for in, want := range map[string]string{
			"$nope":        "unknown variable $nope",
			"100% $status": "a literal % cannot be sent to Envoy",
		} {
			if _, _, err := accesslog.ToEnvoy(in); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("ToEnvoy(%q) = %v, want %q", in, err, want)
			}
		}
	})
}

func TestParseEnvoyFormatErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		json map[string]string
		want string
	}{
		{"unknown operator", "%REQ(:PATH)% %STATUS%", nil, "access log format: command operator %STATUS% is not supported by flotilla-agent"},
		{"bad header", "%REQ(a b)%", nil, "access log format: bad header name in command operator %REQ(a b)%"},
		{"bad length", "%REQ(A):x%", nil, "access log format: bad length in command operator %REQ(A):x"},
		{"other start time format", "%START_TIME(%s)%", nil, "access log format: command operator %START_TIME(%s)% is not supported by flotilla-agent"},
		{"unterminated", "%BYTES_SENT", nil, "access log format: unterminated command operator %BYTES_SENT"},
		{"lone percent", "100 % done", nil, `access log format: '%' not followed by a command operator in "% done"`},
		{"empty", "\n", nil, "access log format: empty"},
		{"both", "%BYTES_SENT%", map[string]string{"a": "%BYTES_SENT%"}, "access log format: text and json given, want one"},
		{"json key", "", map[string]string{"a": "%PATH%"}, `json_format key "a": access log format: command operator %PATH% is not supported by flotilla-agent`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := accesslog.ParseEnvoyFormat(tt.text, tt.json)
			if err == nil || err.Error() != tt.want {
				t.Errorf("ParseEnvoyFormat() = %v\nwant %s", err, tt.want)
			}
		})
	}
}
