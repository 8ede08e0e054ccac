package flotctl

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flotilla-proxy/flotilla/controlplane/bundle"
	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

func (a *app) validateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check config files locally, without the control plane",
		Long: `validate loads YAML files and directories (every *.yaml, *.yml and *.json
below them) and checks them the way the control plane will. It prints one line
per problem, naming the file and field, and exits 1 when there is any.`,
		Args: pathArgs,
		RunE: runE(func(_ *cobra.Command, args []string) error {
			files, err := loadValid(args, ExitFailure)
			if err != nil {
				return err
			}
			return writeValid(a.stdout, files)
		}),
	}
}

// loadValid loads and validates the config at paths. Problems come back as an
// exitError with code and one line per problem.
func loadValid(paths []string, code int) ([]*adminv1.ConfigFile, error) {
	files, err := bundle.Load(paths...)
	if err == nil {
		err = bundle.Validate(files)
	}
	if err != nil {
		return nil, &exitError{code: code, lines: strings.Split(err.Error(), "\n")}
	}
	return files, nil
}

// writeValid prints the summary of a valid bundle.
func writeValid(w io.Writer, files []*adminv1.ConfigFile) error {
	b := bundle.Merge(files)
	_, err := fmt.Fprintf(w, "valid: %s, %s in %s\n",
		plural(len(b.GetListeners()), "listener"), plural(len(b.GetClusters()), "cluster"), plural(len(files), "file"))
	return err
}
