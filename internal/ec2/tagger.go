// Package ec2 talks to the EC2 API for meshd: it writes the host's mesh
// state into its instance tags, and joins the fleet's instances with the
// registry for the migration report (meshctl fleet --ec2).
package ec2

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Tag keys meshd writes on its own instance.
const (
	TagOverlayIP = "meshd:overlay-ip"
	TagVersion   = "meshd:version"
	TagState     = "meshd:state"
)

// CreateTagsAPI is the part of the EC2 client the tagger uses.
type CreateTagsAPI interface {
	CreateTags(ctx context.Context, in *awsec2.CreateTagsInput, opts ...func(*awsec2.Options)) (*awsec2.CreateTagsOutput, error)
}

// Tagger keeps the instance's meshd tags up to date in the background.
// It never blocks its caller: Set records the wish, Run retries with
// backoff until EC2 accepts it; a newer Set replaces a pending one.
type Tagger struct {
	api        CreateTagsAPI
	instanceID string
	log        *slog.Logger
	first, max time.Duration

	mu      sync.Mutex
	want    map[string]string
	wake    chan struct{}
	lastErr error
	lastOK  time.Time
}

// NewTagger tags instanceID through api.
func NewTagger(api CreateTagsAPI, instanceID string, log *slog.Logger) *Tagger {
	return &Tagger{api: api, instanceID: instanceID, log: log, first: time.Second, max: 5 * time.Minute, wake: make(chan struct{}, 1)}
}

// Set asks for these tags; it returns at once.
func (t *Tagger) Set(tags map[string]string) {
	t.mu.Lock()
	t.want = tags
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Status is the time of the last success and the last error (nil once
// tags were written).
func (t *Tagger) Status() (time.Time, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastOK, t.lastErr
}

// Run writes wanted tags until ctx ends.
func (t *Tagger) Run(ctx context.Context) {
	backoff := t.first
	for {
		t.mu.Lock()
		want := t.want
		t.mu.Unlock()
		if want == nil {
			select {
			case <-ctx.Done():
				return
			case <-t.wake:
				continue
			}
		}
		err := t.write(ctx, want)
		t.mu.Lock()
		t.lastErr = err
		if err == nil {
			t.lastOK = time.Now()
			if sameTags(t.want, want) {
				t.want = nil
			}
		}
		t.mu.Unlock()
		if err == nil {
			backoff = t.first
			continue
		}
		t.log.Warn("EC2 tags not written; retrying", "instance", t.instanceID, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, t.max)
	}
}

func (t *Tagger) write(ctx context.Context, tags map[string]string) error {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ts []types.Tag
	for _, k := range keys {
		ts = append(ts, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := t.api.CreateTags(ctx, &awsec2.CreateTagsInput{Resources: []string{t.instanceID}, Tags: ts})
	return err
}

func sameTags(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
