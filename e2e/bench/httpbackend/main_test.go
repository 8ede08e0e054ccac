package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlerAnswersWithTheBody(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		method string
		want   int // body bytes the client reads
	}{
		{name: "1 KiB GET", size: 1024, method: http.MethodGet, want: 1024},
		{name: "empty", size: 0, method: http.MethodGet, want: 0},
		{name: "odd size", size: 100, method: http.MethodGet, want: 100},
		{name: "HEAD has no body", size: 1024, method: http.MethodHead, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandler(tt.size)
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			// Two requests on one keep-alive connection.
			for range 2 {
				req, err := http.NewRequest(tt.method, srv.URL+"/any/path", nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusOK || len(body) != tt.want || resp.ContentLength != int64(tt.size) {
					t.Fatalf("status %d, %d body bytes, Content-Length %d; want 200, %d, %d",
						resp.StatusCode, len(body), resp.ContentLength, tt.want, tt.size)
				}
				if tt.want > 0 && body[len(body)-1] != '\n' {
					t.Fatalf("body does not end in a newline: %q", body[len(body)-10:])
				}
			}
			if got := h.requests.Load(); got != 2 {
				t.Fatalf("served %d requests, want 2", got)
			}
		})
	}
}
