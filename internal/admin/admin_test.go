package admin

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeSource answers Status; the rest of Source is never called here.
type fakeSource struct{ Source }

func (fakeSource) Status(context.Context) (Status, error) { return Status{Name: "h1"}, nil }

func serveTest(t *testing.T) (*http.Client, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, sock, fakeSource{}, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	c := &http.Client{Transport: UnixTransport(sock)}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Get("http://meshd/v1/status"); err == nil {
			return c, sock
		}
		if time.Now().After(deadline) {
			t.Fatal("admin socket never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProfilesOnTheAdminSocket(t *testing.T) {
	c, _ := serveTest(t)
	resp, err := c.Get("http://meshd/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile:") {
		t.Fatalf("heap profile: status %d, body %.200q", resp.StatusCode, body)
	}
}

func TestSecondServeOnLiveSocketFails(t *testing.T) {
	_, sock := serveTest(t)
	err := Serve(context.Background(), sock, fakeSource{}, nil)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Serve on a live socket: %v, want 'in use'", err)
	}
}
