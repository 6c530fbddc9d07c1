package ec2

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
)

var update = flag.Bool("update", false, "rewrite golden files")

// fakeEC2 is a local EC2 Query API endpoint: there is no EC2 here, so this
// is the one place a stand-in is right. It checks the requests it gets.
type fakeEC2 struct {
	mu        sync.Mutex
	fail      int // answer this many CreateTags with 503 first
	calls     []url.Values
	pages     [][]string // instance XML per page
	pageCalls int
}

func (f *fakeEC2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, form)
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDTEST/") {
		http.Error(w, "unsigned", http.StatusForbidden)
		return
	}
	switch form.Get("Action") {
	case "CreateTags":
		if f.fail > 0 {
			f.fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `<Response><Errors><Error><Code>Unavailable</Code><Message>try later</Message></Error></Errors><RequestID>x</RequestID></Response>`)
			return
		}
		fmt.Fprint(w, `<CreateTagsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><return>true</return></CreateTagsResponse>`)
	case "DescribeInstances":
		page := 0
		if tok := form.Get("NextToken"); tok != "" {
			fmt.Sscanf(tok, "page%d", &page)
		}
		f.pageCalls++
		var b bytes.Buffer
		b.WriteString(`<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><reservationSet><item><reservationId>r-1</reservationId><instancesSet>`)
		for _, in := range f.pages[page] {
			b.WriteString(in)
		}
		b.WriteString(`</instancesSet></item></reservationSet>`)
		if page+1 < len(f.pages) {
			fmt.Fprintf(&b, `<nextToken>page%d</nextToken>`, page+1)
		}
		b.WriteString(`</DescribeInstancesResponse>`)
		w.Write(b.Bytes())
	default:
		http.Error(w, "unexpected action "+form.Get("Action"), http.StatusBadRequest)
	}
}

func client(t *testing.T, f *fakeEC2) *awsec2.Client {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return awsec2.New(awsec2.Options{
		Region:       "eu-west-1",
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
		BaseEndpoint: aws.String(srv.URL),
		Retryer:      aws.NopRetryer{}, // the tagger's own backoff is under test
	})
}

func instance(id, vpc, ip, state string) string {
	v := ""
	if vpc != "" {
		v = "<vpcId>" + vpc + "</vpcId>"
	}
	return fmt.Sprintf(`<item><instanceId>%s</instanceId>%s<privateIpAddress>%s</privateIpAddress><instanceState><code>16</code><name>%s</name></instanceState></item>`, id, v, ip, state)
}

func TestTaggerRetriesThenWrites(t *testing.T) {
	f := &fakeEC2{fail: 2}
	tg := NewTagger(client(t, f), "i-0meshd1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	tg.first = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tg.Run(ctx)
	tg.Set(map[string]string{TagOverlayIP: "100.100.0.7", TagVersion: "1.2.3", TagState: "running"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err := tg.Status()
		if err == nil && !ok.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tags not written: last error %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 3 {
		t.Fatalf("%d CreateTags calls, want 2 failures then 1 success", len(f.calls))
	}
	last := f.calls[2]
	if last.Get("ResourceId.1") != "i-0meshd1" || last.Get("Tag.1.Key") != TagOverlayIP || last.Get("Tag.1.Value") != "100.100.0.7" ||
		last.Get("Tag.2.Key") != TagState || last.Get("Tag.3.Value") != "1.2.3" {
		t.Errorf("CreateTags request: %v", last)
	}
}

func TestTaggerReportsLastError(t *testing.T) {
	f := &fakeEC2{fail: 1000}
	tg := NewTagger(client(t, f), "i-0meshd1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	tg.first = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tg.Run(ctx)
	tg.Set(map[string]string{TagState: "running"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := tg.Status(); err != nil && strings.Contains(err.Error(), "Unavailable") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no error reported while EC2 refuses")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestInventoryJoinsPages(t *testing.T) {
	f := &fakeEC2{pages: [][]string{
		{instance("i-a", "vpc-1", "198.18.2.11", "running"), instance("i-b", "vpc-1", "198.18.2.12", "running")},
		{instance("i-c", "", "198.18.1.11", "running"), instance("i-gone", "vpc-1", "198.18.2.99", "terminated")},
		{instance("i-d", "vpc-2", "198.18.3.11", "stopped")},
	}}
	hosts := []RegistryHost{
		{InstanceID: "i-a", Network: "vpc-1", OverlayIP: "100.100.0.1", Version: "1.0", InMesh: true},
		{InstanceID: "i-c", Network: "classic", OverlayIP: "100.100.0.3", Version: "0.9", InMesh: true},
		{InstanceID: "i-d", Network: "vpc-2", OverlayIP: "100.100.0.4", Version: "1.0", InMesh: false},
		{InstanceID: "dc-host-7", Network: "dc", OverlayIP: "100.100.0.9", Version: "1.0", InMesh: true},
	}
	r, err := Inventory(context.Background(), client(t, f), hosts)
	if err != nil {
		t.Fatal(err)
	}
	if f.pageCalls != 3 {
		t.Errorf("%d DescribeInstances pages read, want 3", f.pageCalls)
	}
	if r.Instances != 4 || r.InMesh != 2 || len(r.Missing) != 2 || len(r.Orphans) != 1 || r.Orphans[0].InstanceID != "dc-host-7" {
		t.Errorf("report: %+v", r)
	}
	var b bytes.Buffer
	r.WriteTable(&b)
	p := "testdata/inventory.golden"
	if *update {
		os.WriteFile(p, b.Bytes(), 0o644)
	}
	want, _ := os.ReadFile(p)
	if b.String() != string(want) {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}
