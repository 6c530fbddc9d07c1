package daemon

import (
	"context"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/ec2"
	"github.com/meshd/meshd/internal/version"
)

// startTagger writes the mesh state into this instance's tags on EC2,
// in the background: a slow or failing EC2 API never holds the data plane.
func (d *Daemon) startTagger(ctx context.Context) {
	if d.cfg.Identity.Source != config.SourceEC2 {
		return
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(d.region))
	if err != nil {
		d.log.Error("EC2 tags disabled: no AWS configuration", "err", err)
		return
	}
	d.tagger = ec2.NewTagger(ec2.CreateTagsFunc(awsec2.NewFromConfig(awsCfg).CreateTags), d.self.InstanceID, d.log)
	go d.tagger.Run(ctx)
	d.tagger.Set(map[string]string{
		ec2.TagOverlayIP: d.self.OverlayIP.String(),
		ec2.TagVersion:   version.Version,
		ec2.TagState:     "running",
	})
}
