package flotctl

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func resStatus(short string, state adminv1.SyncState, desired, sent, acked string) *adminv1.ResourceStatus {
	return &adminv1.ResourceStatus{Short: short, State: state, Desired: desired, Sent: sent, Acked: acked}
}

func TestSyncCell(t *testing.T) {
	tests := []struct {
		name string
		rs   *adminv1.ResourceStatus
		want string
	}{
		{"absent", nil, "NOT_SENT"},
		{"synced", resStatus("CDS", adminv1.SyncState_SYNC_STATE_SYNCED, "7", "7", "7"), "SYNCED (v7)"},
		{"stale", resStatus("CDS", adminv1.SyncState_SYNC_STATE_STALE, "8", "8", "7"), "STALE (sent v8, acked v7)"},
		{"stale before any ack", resStatus("CDS", adminv1.SyncState_SYNC_STATE_STALE, "1", "1", ""), "STALE (sent v1, acked none)"},
		{"nacked names the rejected version", &adminv1.ResourceStatus{
			Short: "LDS", State: adminv1.SyncState_SYNC_STATE_NACKED, Desired: "8", Sent: "8", Acked: "7",
			LastNack: &adminv1.Nack{Version: "8", Message: "bind: address already in use"},
		}, "NACKED (v8)"},
		{"nacked without a nack record falls back to sent", resStatus("LDS", adminv1.SyncState_SYNC_STATE_NACKED, "8", "8", "7"), "NACKED (v8)"},
		{"not sent", resStatus("EDS", adminv1.SyncState_SYNC_STATE_NOT_SENT, "", "", ""), "NOT_SENT"},
		{"non-numeric versions are shown as they are", resStatus("CDS", adminv1.SyncState_SYNC_STATE_SYNCED, "7-ab12", "7-ab12", "7-ab12"), "SYNCED (7-ab12)"},
		{"unspecified", resStatus("CDS", adminv1.SyncState_SYNC_STATE_UNSPECIFIED, "", "", ""), "UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := syncCell(tt.rs); got != tt.want {
				t.Errorf("syncCell() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteAgents(t *testing.T) {
	synced := func(v string) []*adminv1.ResourceStatus {
		return []*adminv1.ResourceStatus{
			resStatus("CDS", adminv1.SyncState_SYNC_STATE_SYNCED, v, v, v),
			resStatus("EDS", adminv1.SyncState_SYNC_STATE_SYNCED, v, v, v),
			resStatus("LDS", adminv1.SyncState_SYNC_STATE_SYNCED, v, v, v),
		}
	}
	tests := []struct {
		name   string
		agents []*adminv1.Agent
		want   string
	}{
		{
			name: "no agents prints the header",
			want: "NODE  LABELS  CDS  EDS  LDS  CONNECTED\n",
		},
		{
			name: "synced, stale and nacked agents, NACK reasons after the table",
			agents: []*adminv1.Agent{
				{NodeId: "node-1", Labels: map[string]string{"role": "edge", "dc": "ams"}, ConnectedSince: timestamppb.New(t0.Add(-5 * time.Minute)), Resources: synced("7")},
				{NodeId: "node-2", Labels: map[string]string{"dc": "fra"}, ConnectedSince: timestamppb.New(t0.Add(-30 * time.Second)), Resources: []*adminv1.ResourceStatus{
					resStatus("CDS", adminv1.SyncState_SYNC_STATE_SYNCED, "8", "8", "8"),
					resStatus("EDS", adminv1.SyncState_SYNC_STATE_STALE, "8", "8", "7"),
					{Short: "LDS", State: adminv1.SyncState_SYNC_STATE_NACKED, Desired: "8", Sent: "8", Acked: "7",
						LastNack: &adminv1.Nack{Version: "8", Message: "listener \"busy\": listen tcp 127.0.0.1:4242:\nbind: address already in use"}},
				}},
				{NodeId: "node-3", ConnectedSince: timestamppb.New(t0.Add(-50 * time.Hour))},
			},
			want: "" +
				"NODE    LABELS            CDS          EDS                        LDS          CONNECTED\n" +
				"node-1  dc=ams,role=edge  SYNCED (v7)  SYNCED (v7)                SYNCED (v7)  5m\n" +
				"node-2  dc=fra            SYNCED (v8)  STALE (sent v8, acked v7)  NACKED (v8)  30s\n" +
				"node-3  <none>            NOT_SENT     NOT_SENT                   NOT_SENT     2d2h\n" +
				"node-2 LDS v8 rejected: listener \"busy\": listen tcp 127.0.0.1:4242:; bind: address already in use\n",
		},
		{
			name: "an old NACK of a type that has since synced is not repeated",
			agents: []*adminv1.Agent{{NodeId: "a1", Resources: []*adminv1.ResourceStatus{
				{Short: "LDS", State: adminv1.SyncState_SYNC_STATE_SYNCED, Desired: "9", Sent: "9", Acked: "9", LastNack: &adminv1.Nack{Version: "8", Message: "old"}},
			}}},
			want: "" +
				"NODE  LABELS  CDS       EDS       LDS          CONNECTED\n" +
				"a1    <none>  NOT_SENT  NOT_SENT  SYNCED (v9)  -\n",
		},
		{
			name: "an SDS column once any agent was sent secrets",
			agents: []*adminv1.Agent{
				{NodeId: "tls", Resources: append(synced("3"), resStatus("SDS", adminv1.SyncState_SYNC_STATE_SYNCED, "3", "3", "3"))},
				{NodeId: "plain", Resources: append(synced("3"), &adminv1.ResourceStatus{Short: "SDS", State: adminv1.SyncState_SYNC_STATE_NOT_SENT, Desired: "3"})},
				{NodeId: "bad", Resources: append(synced("3"), &adminv1.ResourceStatus{Short: "SDS", State: adminv1.SyncState_SYNC_STATE_NACKED, Desired: "4", Sent: "4", Acked: "3",
					LastNack: &adminv1.Nack{Version: "4", Message: "secret \"cert-0123\": tls_certificate.private_key: does not match the certificate"}})},
			},
			want: "" +
				"NODE   LABELS  CDS          EDS          LDS          SDS          CONNECTED\n" +
				"tls    <none>  SYNCED (v3)  SYNCED (v3)  SYNCED (v3)  SYNCED (v3)  -\n" +
				"plain  <none>  SYNCED (v3)  SYNCED (v3)  SYNCED (v3)  NOT_SENT     -\n" +
				"bad    <none>  SYNCED (v3)  SYNCED (v3)  SYNCED (v3)  NACKED (v4)  -\n" +
				"bad SDS v4 rejected: secret \"cert-0123\": tls_certificate.private_key: does not match the certificate\n",
		},
		{
			name: "an RDS column once any agent was sent routes",
			agents: []*adminv1.Agent{
				{NodeId: "web", Resources: append(synced("5"), &adminv1.ResourceStatus{Short: "RDS", State: adminv1.SyncState_SYNC_STATE_NACKED, Desired: "5", Sent: "5", Acked: "4",
					LastNack: &adminv1.Nack{Version: "5", Message: "route configuration \"web\": bad regex"}})},
				{NodeId: "l4", Resources: append(synced("5"), &adminv1.ResourceStatus{Short: "RDS", State: adminv1.SyncState_SYNC_STATE_NOT_SENT, Desired: "5"})},
			},
			want: "" +
				"NODE  LABELS  CDS          EDS          LDS          RDS          CONNECTED\n" +
				"web   <none>  SYNCED (v5)  SYNCED (v5)  SYNCED (v5)  NACKED (v5)  -\n" +
				"l4    <none>  SYNCED (v5)  SYNCED (v5)  SYNCED (v5)  NOT_SENT     -\n" +
				"web RDS v5 rejected: route configuration \"web\": bad regex\n",
		},
		{
			name:   "no SDS column when no agent was sent secrets",
			agents: []*adminv1.Agent{{NodeId: "plain", Resources: append(synced("3"), &adminv1.ResourceStatus{Short: "SDS", State: adminv1.SyncState_SYNC_STATE_NOT_SENT, Desired: "3"})}},
			want: "" +
				"NODE   LABELS  CDS          EDS          LDS          CONNECTED\n" +
				"plain  <none>  SYNCED (v3)  SYNCED (v3)  SYNCED (v3)  -\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeAgents(&buf, tt.agents, t0); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("writeAgents() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestAge(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{1499 * time.Millisecond, "1s"},
		{119 * time.Second, "119s"},
		{2 * time.Minute, "2m"},
		{5*time.Minute + 3*time.Second, "5m3s"},
		{25 * time.Minute, "25m"},
		{3 * time.Hour, "3h"},
		{3*time.Hour + 15*time.Minute, "3h15m"},
		{20 * time.Hour, "20h"},
		{3*24*time.Hour + 4*time.Hour, "3d4h"},
		{4 * 24 * time.Hour, "4d"},
		{45 * 24 * time.Hour, "45d"},
	}
	for _, tt := range tests {
		t.Run(tt.d.String(), func(t *testing.T) {
			if got := age(tt.d); got != tt.want {
				t.Errorf("age(%v) = %q, want %q", tt.d, got, tt.want)
			}
		})
	}
}

func TestParseSelector(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "dc=ams", want: map[string]string{"dc": "ams"}},
		{in: "dc=ams, role=edge", want: map[string]string{"dc": "ams", "role": "edge"}},
		{in: "dc=ams,dc=ams", want: map[string]string{"dc": "ams"}},
		{in: "dc", wantErr: `want key=value pairs separated by commas, got "dc"`},
		{in: "dc=", wantErr: `got "dc="`},
		{in: "dc=ams,,role=edge", wantErr: `got ""`},
		{in: "dc=ams,dc=fra", wantErr: `label "dc" given twice`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSelector(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSelector(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("parseSelector(%q) = %v, want %v", tt.in, got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("parseSelector(%q) = %v, want %v", tt.in, got, tt.want)
				}
			}
		})
	}
}

func TestWriteHistory(t *testing.T) {
	const hash = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d1a2b"
	versions := []*adminv1.VersionInfo{
		{Number: 3, Hash: hash, Author: "bob@example.com", Message: "undo the move", CreatedAt: timestamppb.New(t0.Add(time.Hour)), RollbackOf: 1},
		{Number: 2, Hash: "ffff", Author: "alice@example.com", Message: "move echo to b2\n\nLonger explanation.", CreatedAt: timestamppb.New(t0.Add(time.Minute))},
		{Number: 1, Hash: hash, Author: "alice@example.com", Message: "first", CreatedAt: timestamppb.New(t0)},
	}
	want := "" +
		"VERSION  CREATED               AUTHOR             HASH          MESSAGE\n" +
		"3        2026-03-01T13:00:00Z  bob@example.com    1a2b3c4d5e6f  rollback of 1: undo the move\n" +
		"2        2026-03-01T12:01:00Z  alice@example.com  ffff          move echo to b2\n" +
		"1        2026-03-01T12:00:00Z  alice@example.com  1a2b3c4d5e6f  first\n"
	var buf bytes.Buffer
	if err := writeHistory(&buf, versions); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != want {
		t.Errorf("writeHistory() =\n%s\nwant\n%s", got, want)
	}
}

// quickstart is a small bundle split over two files, as people write it.
func quickstart(endpoints ...string) []*adminv1.ConfigFile {
	c := &configv1.Cluster{Name: "echo", ConnectTimeout: durationpb.New(2 * time.Second)}
	for _, e := range endpoints {
		c.Endpoints = append(c.Endpoints, &configv1.Endpoint{Address: e})
	}
	return []*adminv1.ConfigFile{
		{Path: "listeners.yaml", Bundle: &configv1.Bundle{Listeners: []*configv1.Listener{
			{Name: "echo", Address: "127.0.0.1:10000", Agents: map[string]string{"dc": "ams"}, Tcp: &configv1.TcpProxy{Cluster: "echo"}},
		}}},
		{Path: "clusters.yaml", Bundle: &configv1.Bundle{Clusters: []*configv1.Cluster{c}}},
	}
}

func TestWriteVersion(t *testing.T) {
	v := &adminv1.Version{
		Info:  &adminv1.VersionInfo{Number: 4, Hash: "abcd", Author: "alice@example.com", Message: "restore\nbecause b2 is down", CreatedAt: timestamppb.New(t0), RollbackOf: 2},
		Files: quickstart("127.0.0.1:9001"),
	}
	want := `# version 4 (rollback of 2)
# sha256: abcd
# author: alice@example.com
# created: 2026-03-01T12:00:00Z
# message: restore
#   because b2 is down
clusters:
- connect_timeout: 2s
  endpoints:
  - address: 127.0.0.1:9001
  name: echo
listeners:
- address: 127.0.0.1:10000
  agents:
    dc: ams
  name: echo
  tcp:
    cluster: echo
`
	var buf bytes.Buffer
	if err := writeVersion(&buf, v); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != want {
		t.Errorf("writeVersion() =\n%s\nwant\n%s", got, want)
	}
}

func TestWriteBundleDiff(t *testing.T) {
	merged := func(files []*adminv1.ConfigFile) *configv1.Bundle {
		b := &configv1.Bundle{}
		for _, f := range files {
			b.Listeners = append(b.Listeners, f.GetBundle().GetListeners()...)
			b.Clusters = append(b.Clusters, f.GetBundle().GetClusters()...)
		}
		return b
	}
	base := merged(quickstart("127.0.0.1:9001"))
	tests := []struct {
		name        string
		server      *configv1.Bundle
		local       *configv1.Bundle
		wantChanges int
		want        string
	}{
		{
			name:   "identical",
			server: base, local: merged(quickstart("127.0.0.1:9001")),
			want: "no changes against version 7\n",
		},
		{
			name:   "changed endpoint",
			server: base, local: merged(quickstart("127.0.0.1:9002")),
			wantChanges: 1,
			want: `--- v7/clusters/echo
+++ local/clusters/echo
@@ -1,4 +1,4 @@
 connect_timeout: 2s
 endpoints:
-- address: 127.0.0.1:9001
+- address: 127.0.0.1:9002
 name: echo
1 change against version 7: 1 changed
`,
		},
		{
			name:   "added and removed, listeners first",
			server: base,
			local: &configv1.Bundle{
				Listeners: []*configv1.Listener{base.Listeners[0], {Name: "db", Address: ":3306", Tcp: &configv1.TcpProxy{Cluster: "db"}}},
				Clusters:  []*configv1.Cluster{{Name: "db", Endpoints: []*configv1.Endpoint{{Address: "192.0.2.1:3306", Weight: 2}}}},
			},
			wantChanges: 3,
			want: `--- /dev/null
+++ local/listeners/db
@@ -0,0 +1,4 @@
+address: :3306
+name: db
+tcp:
+  cluster: db
--- /dev/null
+++ local/clusters/db
@@ -0,0 +1,4 @@
+endpoints:
+- address: 192.0.2.1:3306
+  weight: 2
+name: db
--- v7/clusters/echo
+++ /dev/null
@@ -1,4 +0,0 @@
-connect_timeout: 2s
-endpoints:
-- address: 127.0.0.1:9001
-name: echo
3 changes against version 7: 2 added, 1 removed
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := writeBundleDiff(&buf, tt.server, "v7", tt.local, "version 7")
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.wantChanges {
				t.Errorf("writeBundleDiff() = %d changes, want %d", n, tt.wantChanges)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("writeBundleDiff() wrote\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestWriteApplied(t *testing.T) {
	info := &adminv1.VersionInfo{Number: 7, Hash: "1a2b3c4d5e6f"}
	tests := []struct {
		name   string
		resp   *adminv1.ApplyResponse
		dryRun bool
		want   string
	}{
		{"applied", &adminv1.ApplyResponse{Version: info}, false, "applied version 7 (sha256 1a2b3c4d…)\n"},
		{"unchanged", &adminv1.ApplyResponse{Version: info, Unchanged: true}, false, "unchanged: latest version 7 already has this content\n"},
		{"dry run", &adminv1.ApplyResponse{Version: info}, true, "dry run: would store version 7 (sha256 1a2b3c4d…); nothing was stored\n"},
		{"dry run unchanged", &adminv1.ApplyResponse{Version: info, Unchanged: true}, true, "dry run: unchanged: latest version 7 already has this content\n"},
		{"dry run without a number", &adminv1.ApplyResponse{}, true, "dry run: the control plane accepted the config; nothing was stored\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeApplied(&buf, tt.resp, tt.dryRun); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("writeApplied() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestXDSVersion(t *testing.T) {
	for in, want := range map[string]string{"": "none", "7": "v7", "v7": "v7", "7-abc": "7-abc"} {
		if got := xdsVersion(in); got != want {
			t.Errorf("xdsVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
