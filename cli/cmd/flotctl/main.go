// Command flotctl drives a Flotilla control plane: validate, diff and apply
// config, read the history, roll back, and see which version each agent runs.
// Run "flotctl --help" for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/flotilla-proxy/flotilla/cli/flotctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := flotctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
