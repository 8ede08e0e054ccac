// Package bundle reads the configuration people write — YAML (or JSON) files
// of listeners and clusters — into config bundles, and validates them.
//
// A config change flows Load (files and directories) → Parse (one file:
// YAML → JSON → protojson into configv1.Bundle) → Validate (everything that can
// be checked without agents, each error naming its file and field) → Merge (one
// bundle sorted by name, which the store hashes and the compiler compiles).
// The schema itself lives in proto/flotilla/config/v1, so the CLI, the control
// plane and the docs share one definition.
//
// TLS material: Load reads the PEM files a file names (relative to it) into
// the bundle, Validate checks certificates and keys, and Redact is the one
// way to show a bundle outside the store and the xDS stream: every private
// key becomes `<private key sha256:…>`.
package bundle

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	sigsyaml "sigs.k8s.io/yaml"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
	configv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/config/v1"
)

// Load reads files and directories and parses each file. A directory
// contributes every *.yaml, *.yml and *.json file below it, recursively, in
// lexical order; hidden files and directories (name starting with ".") are
// skipped. A file named explicitly is read whatever its name. The path in each
// ConfigFile is as the user named it (a directory's files are joined to it).
// A file named twice (directly or through a directory) is read once.
// PEM files named by tls blocks are read, relative to the directory of the
// file naming them, into their pem fields; the path stays in file, for
// error messages.
func Load(paths ...string) ([]*adminv1.ConfigFile, error) {
	var names []string
	seen := make(map[string]bool)
	add := func(name string) {
		if key := filepath.Clean(name); !seen[key] {
			seen[key] = true
			names = append(names, name)
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		if !st.IsDir() {
			add(p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(name string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if name != p && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() && isConfigName(d.Name()) {
				found = append(found, name)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		slices.Sort(found)
		for _, name := range found {
			add(name)
		}
	}
	files := make([]*adminv1.ConfigFile, 0, len(names))
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		f, err := Parse(name, data)
		if err != nil {
			return nil, err
		}
		if err := resolvePEM(f); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// isConfigName reports whether a file found in a directory is a config file.
func isConfigName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// Parse parses one file's content: YAML (JSON is YAML too) is converted to
// JSON, shorthands are expanded, and the result is read with protojson into a
// configv1.Bundle; unknown fields are errors. Path is used in errors and
// stored in the ConfigFile as is. An empty file is an empty bundle.
//
// Shorthands: an endpoint written as a plain "ip:port" string becomes
// {"address": "ip:port"}, a certificate, key or CA (a PemSource) written as a
// plain string becomes {"file": "path"} (Load reads the file), a duration may be written the Go way ("1h",
// "1m30s", "250ms") as well as protojson's seconds ("3600s"), a size
// (max_request_body) may be a plain number of bytes, and the key `on` of a
// retry policy, which YAML 1.1 reads as true, is taken as "on".
//
// Errors are *FieldError values naming the file and, where it can be found,
// the field path (clusters[0].endpoints[1].weight).
func Parse(path string, data []byte) (*adminv1.ConfigFile, error) {
	if err := singleDocument(data); err != nil {
		return nil, &FieldError{File: path, Reason: err.Error()}
	}
	js, err := sigsyaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, &FieldError{File: path, Reason: strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")}
	}
	b := &configv1.Bundle{}
	f := &adminv1.ConfigFile{Path: path, Bundle: b}
	var doc any
	if err := decodeJSON(js, &doc); err != nil {
		return nil, &FieldError{File: path, Reason: err.Error()}
	}
	switch doc.(type) {
	case nil: // empty file, or only comments
		return f, nil
	case map[string]any:
	default:
		return nil, &FieldError{File: path, Reason: "the file must be a mapping with listeners and clusters at the top"}
	}
	md := b.ProtoReflect().Descriptor()
	normalize(md, doc)
	js, err = encodeJSON(doc)
	if err != nil {
		return nil, &FieldError{File: path, Reason: err.Error()}
	}
	if err := protojson.Unmarshal(js, b); err != nil {
		field, reason := locate(md, doc, "")
		return nil, &FieldError{File: path, Field: field, Reason: reason}
	}
	return f, nil
}

// singleDocument rejects files holding several YAML documents: only the first
// would be read, and silently dropping the rest would surprise.
func singleDocument(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var v any
	for n := 0; ; n++ {
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // YAMLToJSONStrict reports syntax errors with more context
		}
		if n > 0 && v != nil {
			return errors.New("the file holds several YAML documents (---); put each in its own file")
		}
	}
}

// Merge concatenates the files' listeners, clusters and grpc_services into one Bundle, each
// list sorted by name (stable, so equal names keep file order). The bundle
// holds copies: changing it does not change the files.
func Merge(files []*adminv1.ConfigFile) *configv1.Bundle {
	out := &configv1.Bundle{}
	for _, f := range files {
		for _, l := range f.GetBundle().GetListeners() {
			out.Listeners = append(out.Listeners, proto.CloneOf(l))
		}
		for _, c := range f.GetBundle().GetClusters() {
			out.Clusters = append(out.Clusters, proto.CloneOf(c))
		}
		for _, g := range f.GetBundle().GetGrpcServices() {
			out.GrpcServices = append(out.GrpcServices, proto.CloneOf(g))
		}
	}
	slices.SortStableFunc(out.Listeners, func(a, b *configv1.Listener) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortStableFunc(out.Clusters, func(a, b *configv1.Cluster) int { return cmp.Compare(a.GetName(), b.GetName()) })
	slices.SortStableFunc(out.GrpcServices, func(a, b *configv1.GrpcService) int { return cmp.Compare(a.GetName(), b.GetName()) })
	return out
}
