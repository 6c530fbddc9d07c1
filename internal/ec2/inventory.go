package ec2

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
)

// DescribeInstancesAPI is the part of the EC2 client the inventory uses.
type DescribeInstancesAPI interface {
	DescribeInstances(ctx context.Context, in *awsec2.DescribeInstancesInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeInstancesOutput, error)
}

// RegistryHost is a host as the registry knows it.
type RegistryHost struct {
	InstanceID string `json:"instance_id"`
	Network    string `json:"network"`
	OverlayIP  string `json:"overlay_ip"`
	Version    string `json:"version"`
	InMesh     bool   `json:"in_mesh"` // a live record, not only a lease
}

// Instance is one EC2 instance.
type Instance struct {
	ID        string `json:"instance_id"`
	Network   string `json:"network"` // VPC id or classic
	State     string `json:"state"`
	PrivateIP string `json:"private_ip"`
}

// Report joins the EC2 fleet with the registry: the migration report.
type Report struct {
	Instances int                       `json:"instances"`
	InMesh    int                       `json:"in_mesh"`
	Missing   []Instance                `json:"missing"` // instances meshd does not run on
	Orphans   []RegistryHost            `json:"orphans"` // registry hosts with no instance
	ByNetwork map[string]map[string]int `json:"by_network"`
	ByVersion map[string]int            `json:"by_version"`
	Summary   string                    `json:"summary"`
}

// Inventory lists every instance (all pages) and joins them with hosts.
func Inventory(ctx context.Context, api DescribeInstancesAPI, hosts []RegistryHost) (Report, error) {
	byID := map[string]RegistryHost{}
	for _, h := range hosts {
		byID[h.InstanceID] = h
	}
	r := Report{ByNetwork: map[string]map[string]int{}, ByVersion: map[string]int{}}
	seen := map[string]bool{}
	pages := awsec2.NewDescribeInstancesPaginator(api, &awsec2.DescribeInstancesInput{})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return Report{}, fmt.Errorf("describe instances: %w", err)
		}
		for _, res := range page.Reservations {
			for _, in := range res.Instances {
				inst := Instance{ID: aws.ToString(in.InstanceId), Network: aws.ToString(in.VpcId), PrivateIP: aws.ToString(in.PrivateIpAddress)}
				if inst.Network == "" {
					inst.Network = "classic"
				}
				if in.State != nil {
					inst.State = string(in.State.Name)
				}
				if inst.State == "terminated" {
					continue
				}
				seen[inst.ID] = true
				r.Instances++
				if r.ByNetwork[inst.Network] == nil {
					r.ByNetwork[inst.Network] = map[string]int{}
				}
				h, ok := byID[inst.ID]
				switch {
				case ok && h.InMesh:
					r.InMesh++
					r.ByNetwork[inst.Network]["in-mesh"]++
					r.ByVersion[h.Version]++
				default:
					r.Missing = append(r.Missing, inst)
					r.ByNetwork[inst.Network]["missing"]++
				}
			}
		}
	}
	for _, h := range hosts {
		if !seen[h.InstanceID] {
			r.Orphans = append(r.Orphans, h)
		}
	}
	sort.Slice(r.Missing, func(i, j int) bool { return r.Missing[i].ID < r.Missing[j].ID })
	sort.Slice(r.Orphans, func(i, j int) bool { return r.Orphans[i].InstanceID < r.Orphans[j].InstanceID })
	pct := 0.0
	if r.Instances > 0 {
		pct = 100 * float64(r.InMesh) / float64(r.Instances)
	}
	r.Summary = fmt.Sprintf("%d instances, %d in the mesh (%.0f%%)", r.Instances, r.InMesh, pct)
	return r, nil
}

// WriteTable renders the report for operators.
func (r Report) WriteTable(w io.Writer) {
	nets := make([]string, 0, len(r.ByNetwork))
	for n := range r.ByNetwork {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tIN MESH\tMISSING")
	for _, n := range nets {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", n, r.ByNetwork[n]["in-mesh"], r.ByNetwork[n]["missing"])
	}
	tw.Flush()
	vers := make([]string, 0, len(r.ByVersion))
	for v := range r.ByVersion {
		vers = append(vers, v)
	}
	sort.Strings(vers)
	for _, v := range vers {
		fmt.Fprintf(w, "meshd %s: %d\n", v, r.ByVersion[v])
	}
	for _, m := range r.Missing {
		fmt.Fprintf(w, "missing: %s (%s, %s, %s)\n", m.ID, m.Network, m.State, m.PrivateIP)
	}
	for _, o := range r.Orphans {
		fmt.Fprintf(w, "no instance: %s (%s, %s)\n", o.InstanceID, o.Network, o.OverlayIP)
	}
	fmt.Fprintln(w, r.Summary)
}
