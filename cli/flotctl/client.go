package flotctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminv1 "github.com/flotilla-proxy/flotilla/proto/flotilla/admin/v1"
)

// client is a connection to the control plane's AdminService for one command.
type client struct {
	api     adminv1.AdminServiceClient
	conn    *grpc.ClientConn
	dialer  *dialer
	server  string
	timeout time.Duration
}

// connect prepares a client for a.server. gRPC dials lazily, so an unreachable
// server shows up as the first call's error, which explain translates.
func (a *app) connect() (*client, error) {
	d := &dialer{}
	conn, err := grpc.NewClient("passthrough:///"+a.server,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d.dial),
	)
	if err != nil {
		return nil, &exitError{code: ExitUsage, msg: fmt.Sprintf("invalid --server %q: %v", a.server, err)}
	}
	return &client{
		api:     adminv1.NewAdminServiceClient(conn),
		conn:    conn,
		dialer:  d,
		server:  a.server,
		timeout: a.timeout,
	}, nil
}

// call runs fn with a context bounded by --timeout.
func (c *client) call(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return fn(ctx)
}

// Close releases the connection.
func (c *client) Close() { c.conn.Close() }

// dialer dials TCP and remembers whether the last attempt failed, so that "unreachable" can
// be explained with the socket error ("connection refused") rather than
// gRPC's wrapped transport message.
type dialer struct {
	mu      sync.Mutex
	lastErr error
}

func (d *dialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "tcp", addr)
	d.mu.Lock()
	d.lastErr = err
	d.mu.Unlock()
	return conn, err
}

// cause returns the innermost text of the last dial error, or "".
func (d *dialer) cause() string {
	d.mu.Lock()
	err := d.lastErr
	d.mu.Unlock()
	if err == nil {
		return ""
	}
	for next := errors.Unwrap(err); next != nil; next = errors.Unwrap(err) {
		err = next
	}
	return err.Error()
}

// explainWrite is explain for calls that store a version: when the answer did
// not come in time, the version may have been stored all the same.
func (c *client) explainWrite(err error, notFound string) *exitError {
	ee := c.explain(err, notFound)
	if status.Code(err) == codes.DeadlineExceeded && c.dialer.cause() == "" {
		ee.msg += "; it may have stored the version anyway: check `flotctl history` before retrying"
	}
	return ee
}

// explain turns an RPC error into one sentence for the user. notFound is the
// sentence for codes.NotFound, which only the caller can phrase (it knows
// which version it asked for).
func (c *client) explain(err error, notFound string) *exitError {
	if ee := (*exitError)(nil); errors.As(err, &ee) {
		return ee
	}
	st, _ := status.FromError(err)
	if cause := c.dialer.cause(); cause != "" && (st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded) {
		return failure("cannot reach the control plane at %s: %s", c.server, cause)
	}
	msg := strings.TrimSpace(st.Message())
	switch st.Code() {
	case codes.Unavailable:
		return failure("cannot reach the control plane at %s: %s", c.server, msg)
	case codes.DeadlineExceeded:
		return failure("the control plane at %s did not answer within %s", c.server, c.timeout)
	case codes.Canceled:
		return failure("interrupted before the control plane at %s answered", c.server)
	case codes.InvalidArgument:
		lines := strings.Split(msg, "\n")
		if len(lines) == 1 {
			return failure("the control plane rejected the config: %s", msg)
		}
		return &exitError{code: ExitFailure, msg: fmt.Sprintf("the control plane rejected the config (%d errors):", len(lines)), lines: lines}
	case codes.FailedPrecondition:
		// A compare-and-set conflict ("latest version is 5, not 4 as
		// expected") or a rollback to the content already running.
		return failure("the control plane refused: %s", msg)
	case codes.NotFound:
		if notFound != "" {
			return failure("%s", notFound)
		}
		return failure("not found: %s", msg)
	case codes.Unimplemented:
		return failure("the control plane at %s does not support this command: %s", c.server, msg)
	default:
		return failure("the control plane at %s failed: %s", c.server, msg)
	}
}
