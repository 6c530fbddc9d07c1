package zkext

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/internal/zkserver"
)

func connect(t *testing.T) (*zk.Conn, <-chan zk.Event) {
	t.Helper()
	if _, err := exec.LookPath("java"); err != nil {
		t.Skip("SKIP-DEP: java is missing; Debian's zookeeper package is needed (scripts/install-deps.sh)")
	}
	s, err := zkserver.Start(context.Background(), zkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	evs := make(chan zk.Event, 64)
	c, _, err := zk.Connect([]string{s.Addr()}, 10*time.Second, zk.WithLogInfo(false),
		zk.WithEventCallback(func(ev zk.Event) {
			if ev.Type != zk.EventSession {
				evs <- ev
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, evs
}

func mustCreate(t *testing.T, c *zk.Conn, p string, flags int32) string {
	t.Helper()
	got, err := c.Create(p, []byte("x"), flags, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatalf("create %s: %v", p, err)
	}
	return got
}

// The watch reports creates and deletes of grandchildren with their paths,
// stays after firing, and says nothing of what is outside its tree.
func TestRecursiveWatchSeesEveryNodeUnderIt(t *testing.T) {
	c, evs := connect(t)
	mustCreate(t, c, "/w", 0)
	mustCreate(t, c, "/w/b", 0)
	mustCreate(t, c, "/other", 0)
	if _, err := AddRecursiveWatch(c, "/w"); err != nil {
		t.Fatal(err)
	}
	n1 := mustCreate(t, c, "/w/b/r#", zk.FlagEphemeral|zk.FlagSequence)
	mustCreate(t, c, "/other/x", 0)
	if err := c.Delete(n1, -1); err != nil {
		t.Fatal(err)
	}
	n2 := mustCreate(t, c, "/w/b/r#", zk.FlagEphemeral|zk.FlagSequence)
	want := []zk.Event{
		{Type: zk.EventNodeCreated, Path: n1},
		{Type: zk.EventNodeDeleted, Path: n1},
		{Type: zk.EventNodeCreated, Path: n2},
	}
	for _, w := range want {
		select {
		case ev := <-evs:
			if ev.Type != w.Type || ev.Path != w.Path {
				t.Fatalf("event %v %s, want %v %s", ev.Type, ev.Path, w.Type, w.Path)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event; want %v %s", w.Type, w.Path)
		}
	}
	select {
	case ev := <-evs:
		t.Fatalf("unexpected event %v %s", ev.Type, ev.Path)
	case <-time.After(200 * time.Millisecond):
	}
}

// Get tells the zxid it was answered at; SetWatches adds the persistent
// watch and fires, before its reply, the child watch of each node whose
// children changed after the given zxid, and only those.
func TestGetZxidAndSetWatchesCatchUp(t *testing.T) {
	c, evs := connect(t)
	mustCreate(t, c, "/t", 0)
	mustCreate(t, c, "/t/a", 0)
	mustCreate(t, c, "/t/b", 0)
	data, st, z, err := Get(c, "/t/a")
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "x" || z < st.Mzxid || z <= 0 {
		t.Fatalf("get: %q, mzxid %d, reply zxid %d", data, st.Mzxid, z)
	}
	made := mustCreate(t, c, "/t/a/r#", zk.FlagEphemeral|zk.FlagSequence)
	if _, err := SetWatches(c, z, []string{"/t/a", "/t/b"}, []string{"/t"}); err != nil {
		t.Fatal(err)
	}
	select { // already there: fired before the reply
	case ev := <-evs:
		if ev.Type != zk.EventNodeChildrenChanged || ev.Path != "/t/a" {
			t.Fatalf("catch-up event %v %s, want children changed /t/a", ev.Type, ev.Path)
		}
	default:
		t.Fatal("no catch-up event for /t/a before the reply")
	}
	select {
	case ev := <-evs:
		t.Fatalf("unexpected event %v %s: /t/b did not change", ev.Type, ev.Path)
	default:
	}
	// The persistent watch is there; /t/b's child watch stayed set.
	if err := c.Delete(made, -1); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, c, "/t/b/r", 0)
	want := map[string]bool{"deleted " + made: true, "created /t/b/r": true, "children /t/b": true}
	for len(want) > 0 {
		select {
		case ev := <-evs:
			k := map[zk.EventType]string{zk.EventNodeDeleted: "deleted ", zk.EventNodeCreated: "created ", zk.EventNodeChildrenChanged: "children "}[ev.Type] + ev.Path
			if !want[k] {
				t.Fatalf("unexpected event %q, waiting for %v", k, want)
			}
			delete(want, k)
		case <-time.After(5 * time.Second):
			t.Fatalf("no events %v", want)
		}
	}
}
