// Command echo-backend is the demo upstream for `make run`: a line echo server
// that prefixes every reply with its own name, so you can see which backend a
// connection reached through the agent.
//
//	echo-backend -name backend-1 -listen 127.0.0.1:9001
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	name := flag.String("name", "backend", "name put in front of every reply")
	addr := flag.String("listen", "127.0.0.1:9001", "address to listen on")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("backend", *name)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo-backend: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); ln.Close() }()
	log.Info("listening", "addr", ln.Addr().String())
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("accept", "error", err)
			continue
		}
		go serve(c, *name)
	}
}

// serve echoes each line back as "<name>: <line>" until the client closes.
func serve(c net.Conn, name string) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if _, err := fmt.Fprintf(c, "%s: %s\n", name, sc.Text()); err != nil {
			return
		}
	}
}
