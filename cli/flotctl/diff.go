package flotctl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-proxy/flotilla/cli/unidiff"
	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

func (a *app) diffCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "diff PATH...",
		Short: "Show what applying the files would change on the control plane",
		Long: `diff compares the local files with the latest version on the control plane,
listener by listener and cluster by cluster, and prints a unified diff of each
one added, removed or changed, rendered as YAML.

Exit status: 0 when nothing would change, 1 when something would, 2 on error
(invalid files, unreachable control plane), like "kubectl diff".`,
		Args: pathArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := runE(a.diff)(cmd, args)
			if ee := (*exitError)(nil); errors.As(err, &ee) && ee != errChanges {
				// Every failure of diff exits 2: 1 means "there are changes".
				ee.code = ExitUsage
			}
			return err
		},
	}
}

// errChanges ends diff with ExitFailure and nothing on stderr: the diff on
// stdout is the answer.
var errChanges = &exitError{code: ExitFailure}

func (a *app) diff(cmd *cobra.Command, args []string) error {
	files, err := loadValid(args, ExitUsage)
	if err != nil {
		return err
	}
	c, err := a.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	var resp *adminv1.GetVersionResponse
	err = c.call(cmd.Context(), func(ctx context.Context) error {
		resp, err = c.api.GetVersion(ctx, &adminv1.GetVersionRequest{})
		return err
	})
	server := &configv1.Bundle{}
	label := "an empty control plane (no version yet)"
	side := "empty"
	switch {
	case status.Code(err) == codes.NotFound:
	case err != nil:
		return c.explain(err, "")
	default:
		// The server shows private keys as hashes; hash the local ones
		// the same way, so that only a changed key is a change.
		server = bundle.Merge(bundle.Redact(resp.GetVersion().GetFiles()))
		n := resp.GetVersion().GetInfo().GetNumber()
		label = fmt.Sprintf("version %d", n)
		side = fmt.Sprintf("v%d", n)
	}
	n, err := writeBundleDiff(a.stdout, server, side, bundle.Merge(bundle.Redact(files)), label)
	if err != nil {
		return err
	}
	if n > 0 {
		return errChanges
	}
	return nil
}

// resource is one listener, cluster or gRPC service of a bundle, for diffing by name.
type resource struct {
	kind string // "listeners", "clusters" or "grpc_services", as in the YAML
	name string
	msg  proto.Message
}

// bundleResources lists b's listeners, clusters and grpc_services.
func bundleResources(b *configv1.Bundle) map[string]resource {
	out := make(map[string]resource)
	for _, l := range b.GetListeners() {
		out["listeners/"+l.GetName()] = resource{"listeners", l.GetName(), l}
	}
	for _, c := range b.GetClusters() {
		out["clusters/"+c.GetName()] = resource{"clusters", c.GetName(), c}
	}
	for _, g := range b.GetGrpcServices() {
		out["grpc_services/"+g.GetName()] = resource{"grpc_services", g.GetName(), g}
	}
	return out
}

// writeBundleDiff writes, for every listener and cluster that differs between
// the server's bundle and the local one, a unified diff of its YAML, then a
// summary line naming what was compared (label). The file headers are
// side/kind/name for the server (e.g. v7/listeners/echo), local/kind/name for
// the local files, and /dev/null for a side without the resource. It returns
// the number of resources that differ.
func writeBundleDiff(w io.Writer, server *configv1.Bundle, side string, local *configv1.Bundle, label string) (int, error) {
	old, cur := bundleResources(server), bundleResources(local)
	keys := make([]resource, 0, len(old)+len(cur))
	for k, r := range old {
		if _, ok := cur[k]; !ok {
			keys = append(keys, r)
		}
	}
	for _, r := range cur {
		keys = append(keys, r)
	}
	slices.SortFunc(keys, func(a, b resource) int {
		// Listeners, then grpc_services, then clusters, then by name.
		if c := -cmp.Compare(a.kind, b.kind); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	var added, removed, changed int
	for _, r := range keys {
		key := r.kind + "/" + r.name
		oldName, newName := side+"/"+key, "local/"+key
		var oldText, newText string
		var err error
		if o, ok := old[key]; ok {
			if oldText, err = resourceYAML(o.msg); err != nil {
				return 0, err
			}
		} else {
			oldName = "/dev/null"
		}
		if n, ok := cur[key]; ok {
			if newText, err = resourceYAML(n.msg); err != nil {
				return 0, err
			}
		} else {
			newName = "/dev/null"
		}
		d := unidiff.Diff(oldName, newName, oldText, newText)
		if d == "" {
			continue
		}
		switch {
		case oldName == "/dev/null":
			added++
		case newName == "/dev/null":
			removed++
		default:
			changed++
		}
		if _, err := io.WriteString(w, d); err != nil {
			return 0, err
		}
	}
	total := added + changed + removed
	var err error
	if total == 0 {
		_, err = fmt.Fprintf(w, "no changes against %s\n", label)
	} else {
		var parts []string
		for _, p := range []struct {
			n    int
			verb string
		}{{added, "added"}, {changed, "changed"}, {removed, "removed"}} {
			if p.n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", p.n, p.verb))
			}
		}
		_, err = fmt.Fprintf(w, "%s against %s: %s\n", plural(total, "change"), label, strings.Join(parts, ", "))
	}
	return total, err
}

// resourceYAML renders one listener or cluster as YAML.
func resourceYAML(m proto.Message) (string, error) {
	out, err := marshalYAML(m)
	return string(out), err
}
