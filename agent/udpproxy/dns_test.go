package udpproxy

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDNSThroughProxy runs a real DNS exchange through the proxy: miekg/dns as the
// authoritative server behind it and as the client in front of it.
func TestDNSThroughProxy(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc("flotilla.test.", func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		resp.Authoritative = true
		for _, q := range req.Question {
			if q.Qtype != dns.TypeA {
				continue
			}
			rr, err := dns.NewRR(q.Name + " 60 IN A 192.0.2.53")
			if err != nil {
				t.Errorf("building answer: %v", err)
				continue
			}
			rr.Header().Name = q.Name // keep the query's case (0x20 randomisation)
			resp.Answer = append(resp.Answer, rr)
		}
		_ = w.WriteMsg(resp)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: mux, NotifyStartedFunc: func() { close(started) }}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-served
	})
	select {
	case <-started:
	case err := <-served:
		t.Fatalf("dns server: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}

	upstream := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	p, addr := startProxy(t, "127.0.0.1:0", Config{Pick: pickFixed(upstream)})

	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		answers int
	}{
		{"A record", "db.flotilla.test.", dns.TypeA, 1},
		{"mixed case", "DB.Flotilla.TEST.", dns.TypeA, 1},
		{"no AAAA", "db.flotilla.test.", dns.TypeAAAA, 0},
	}
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := new(dns.Msg)
			q.SetQuestion(tt.qname, tt.qtype)
			resp, _, err := c.Exchange(q, addr.String())
			if err != nil {
				t.Fatalf("exchange through proxy: %v", err)
			}
			if resp.Id != q.Id || resp.Rcode != dns.RcodeSuccess || !resp.Authoritative {
				t.Fatalf("response id %d rcode %s aa %v, want id %d NOERROR aa", resp.Id, dns.RcodeToString[resp.Rcode], resp.Authoritative, q.Id)
			}
			if len(resp.Answer) != tt.answers {
				t.Fatalf("answers %v, want %d", resp.Answer, tt.answers)
			}
			if tt.answers > 0 {
				a, ok := resp.Answer[0].(*dns.A)
				if !ok || a.A.String() != "192.0.2.53" || a.Hdr.Name != tt.qname {
					t.Fatalf("answer %v, want %s A 192.0.2.53", resp.Answer[0], tt.qname)
				}
			}
		})
	}
	// dns.Client dials a new socket per exchange: one session each.
	waitFor(t, 2*time.Second, "replies to be counted", func() bool { return p.Stats().DatagramsTx == uint64(len(tests)) })
	if st := p.Stats(); st.SessionsTotal != uint64(len(tests)) {
		t.Errorf("sessions %d, want %d", st.SessionsTotal, len(tests))
	}
}
