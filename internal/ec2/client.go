package ec2

import (
	"context"

	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
)

// The EC2 client is handed to this package as a method value wrapped in
// one of these, never as *awsec2.Client in an interface. The reason is the
// binary's size. kong looks up methods by name through reflection, so Go's
// linker keeps every exported method of every type that is ever converted
// to an interface. For *awsec2.Client that means all of EC2's operations
// and their serializers: 19.5 MB of meshd's 32.7 MB of code. It made meshd
// a 50 MB binary where 20 MB does, and the pages of it that a running
// meshd touches are resident (bench/PROFILES.md, "Lazy peers: one meshd").
// A method value only keeps the one operation it names.

// CreateTagsFunc is a CreateTagsAPI made from a function, such as
// (*awsec2.Client).CreateTags as a method value.
type CreateTagsFunc func(ctx context.Context, in *awsec2.CreateTagsInput, opts ...func(*awsec2.Options)) (*awsec2.CreateTagsOutput, error)

// CreateTags calls f.
func (f CreateTagsFunc) CreateTags(ctx context.Context, in *awsec2.CreateTagsInput, opts ...func(*awsec2.Options)) (*awsec2.CreateTagsOutput, error) {
	return f(ctx, in, opts...)
}

// DescribeInstancesFunc is a DescribeInstancesAPI made from a function,
// such as (*awsec2.Client).DescribeInstances as a method value.
type DescribeInstancesFunc func(ctx context.Context, in *awsec2.DescribeInstancesInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeInstancesOutput, error)

// DescribeInstances calls f.
func (f DescribeInstancesFunc) DescribeInstances(ctx context.Context, in *awsec2.DescribeInstancesInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeInstancesOutput, error) {
	return f(ctx, in, opts...)
}
