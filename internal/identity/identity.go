// Package identity answers "who am I": instance id, network, private and
// public address (and optional IPv6 ones), groups. With source static they
// come from the config; with source ec2 from the instance metadata service
// (IMDSv2), and config values that are set override what metadata says.
package identity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/meshd/meshd/internal/config"
)

// DefaultEndpoint is the instance metadata service.
const DefaultEndpoint = "http://169.254.169.254"

// Options tune the metadata client.
type Options struct {
	Endpoint string        // DefaultEndpoint if empty
	Timeout  time.Duration // for all of Resolve; 10s if zero
}

// Resolved is the host's identity plus what only EC2 knows.
type Resolved struct {
	config.Identity
	Region string // "" for static
}

// Resolve fills in the identity. Static returns the config as is.
func Resolve(ctx context.Context, id config.Identity, o Options) (Resolved, error) {
	if id.Source != config.SourceEC2 {
		return Resolved{Identity: id}, nil
	}
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	client := imds.New(imds.Options{
		Endpoint:          o.Endpoint,
		ClientEnableState: imds.ClientEnabled,
		// A few quick retries: off EC2 the answer is a fast failure.
		Retryer: retry.NewStandard(func(r *retry.StandardOptions) {
			r.MaxAttempts = 3
			r.MaxBackoff = 500 * time.Millisecond
		}),
		HTTPClient: &http.Client{Timeout: 2 * time.Second},
	})
	m := metadata{c: client, endpoint: o.Endpoint}
	instanceID, err := m.get(ctx, "instance-id")
	if err != nil {
		return Resolved{}, err
	}
	region, err := client.GetRegion(ctx, &imds.GetRegionInput{})
	if err != nil {
		return Resolved{}, m.explain(err)
	}
	local, err := m.addr(ctx, "local-ipv4")
	if err != nil {
		return Resolved{}, err
	}
	public, err := m.addr(ctx, "public-ipv4")
	if err != nil && !isNotFound(err) {
		return Resolved{}, err
	}
	mac, err := m.get(ctx, "mac")
	if err != nil {
		return Resolved{}, err
	}
	network, err := m.network(ctx, mac)
	if err != nil {
		return Resolved{}, err
	}
	ip6, err := m.ipv6(ctx, mac)
	if err != nil {
		return Resolved{}, err
	}
	out := Resolved{Identity: config.Identity{Source: config.SourceEC2, InstanceID: instanceID, Network: network,
		PrivateIP: local, PublicIP: public, PrivateIP6: ip6, PublicIP6: id.PublicIP6, Groups: id.Groups}, Region: region.Region}
	// Values set in the config win.
	if id.InstanceID != "" {
		out.InstanceID = id.InstanceID
	}
	if id.Network != "" {
		out.Network = id.Network
	}
	if id.PrivateIP.IsValid() {
		out.PrivateIP = id.PrivateIP
	}
	if id.PublicIP.IsValid() {
		out.PublicIP = id.PublicIP
	}
	if id.PrivateIP6.IsValid() {
		out.PrivateIP6 = id.PrivateIP6
	}
	return out, nil
}

type metadata struct {
	c        *imds.Client
	endpoint string
}

func (m metadata) get(ctx context.Context, path string) (string, error) {
	out, err := m.c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", m.explain(fmt.Errorf("instance metadata %s: %w", path, err))
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		return "", fmt.Errorf("instance metadata %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (m metadata) addr(ctx context.Context, path string) (netip.Addr, error) {
	s, err := m.get(ctx, path)
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("instance metadata %s: %q is not an address", path, s)
	}
	return a, nil
}

// network is the VPC id of the primary interface (mac), or "classic" when
// the instance is in no VPC.
func (m metadata) network(ctx context.Context, mac string) (string, error) {
	vpc, err := m.get(ctx, "network/interfaces/macs/"+mac+"/vpc-id")
	if isNotFound(err) {
		return "classic", nil
	}
	return vpc, err
}

// ipv6 is the primary interface's first IPv6 address, or none when the
// subnet gives it none. EC2's IPv6 addresses are global unicast on the
// interface itself (no NAT): they are the host's private_ip6, and reach it
// from other networks too.
func (m metadata) ipv6(ctx context.Context, mac string) (netip.Addr, error) {
	path := "network/interfaces/macs/" + mac + "/ipv6s"
	s, err := m.get(ctx, path)
	if isNotFound(err) || err == nil && s == "" {
		return netip.Addr{}, nil
	}
	if err != nil {
		return netip.Addr{}, err
	}
	first, _, _ := strings.Cut(s, "\n")
	a, err := netip.ParseAddr(strings.TrimSpace(first))
	if err != nil || !a.Is6() || a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("instance metadata %s: %q is not an IPv6 address", path, first)
	}
	return a, nil
}

func isNotFound(err error) bool {
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

// explain turns "cannot reach" into what the operator should do.
func (m metadata) explain(err error) error {
	if isNotFound(err) {
		return err
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return err // the service answered; the error says what it said
	}
	return fmt.Errorf("instance metadata not reachable at %s: %v; off EC2, set identity.source: static", m.endpoint, err)
}
