package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/ec2"
)

// runEC2 joins the registry's fleet with EC2's instances.
func (c *fleetCmd) runEC2(g *globals, f admin.Fleet) error {
	ctx := context.Background()
	region := c.Region
	if region == "" {
		var st admin.Status
		if err := admin.Dial(g.Socket).Get(ctx, "/v1/status", &st); err == nil {
			region = st.Region
		}
	}
	if region == "" {
		return fmt.Errorf("no EC2 region: this meshd is not on EC2; pass --region")
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return fmt.Errorf("AWS configuration: %w", err)
	}
	client := awsec2.NewFromConfig(cfg, func(o *awsec2.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
	})
	var hosts []ec2.RegistryHost
	for _, h := range f.Hosts {
		hosts = append(hosts, ec2.RegistryHost{InstanceID: h.Name, Network: h.Network, OverlayIP: h.OverlayIP, Version: h.Version, InMesh: h.State == "in-mesh"})
	}
	r, err := ec2.Inventory(ctx, ec2.DescribeInstancesFunc(client.DescribeInstances), hosts)
	if err != nil {
		return err
	}
	if c.Output == "json" {
		return writeJSON(os.Stdout, r)
	}
	r.WriteTable(os.Stdout)
	return nil
}
