// Package admin is the admin API between meshd and meshctl: JSON over HTTP
// on a unix socket that only root (or the meshd group) can reach. It owns
// the wire types of CONTRACTS.md, the server and the client.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Peer is one row of `meshctl peers`; the JSON fields are a contract.
type Peer struct {
	Name          string   `json:"name"`
	OverlayIP     string   `json:"overlay_ip"`
	Network       string   `json:"network"`
	Endpoint      string   `json:"endpoint"`
	Path          string   `json:"path"`
	Reason        string   `json:"reason"`
	LastHandshake string   `json:"last_handshake"`
	RxBytes       uint64   `json:"rx_bytes"`
	TxBytes       uint64   `json:"tx_bytes"`
	State         string   `json:"state"`
	PublicKey     string   `json:"public_key"`
	Groups        []string `json:"groups"`
	RemovalHeld   bool     `json:"removal_held"`
	// HeldByBreaker: the hold-down is over; the mass-removal breaker holds it.
	HeldByBreaker bool `json:"held_by_breaker,omitempty"`
	// KeptAlive: its record is gone from the registry but WireGuard still
	// hears it, so it stays configured (state stale) until it falls silent.
	KeptAlive bool `json:"kept_alive,omitempty"`
	// StaleReason says why a stale peer is kept, in words.
	StaleReason string `json:"stale_reason,omitempty"`
	// PrivateIP6, PublicIP6: the peer's IPv6 underlay addresses, omitted
	// when it has none. The firewall admits it from them (WireGuard port,
	// and the policy with firewall.underlay.members: policy).
	PrivateIP6 string `json:"private_ip6,omitempty"`
	PublicIP6  string `json:"public_ip6,omitempty"`
}

// Status is `meshctl status`; the first fields are a contract.
type Status struct {
	Name         string         `json:"name"`
	OverlayIP    string         `json:"overlay_ip"`
	Network      string         `json:"network"`
	PublicKey    string         `json:"public_key"`
	Registry     string         `json:"registry"`
	Peers        int            `json:"peers"`
	LastSync     string         `json:"last_sync"`
	Trust        string         `json:"trust"` // none | ca
	PeersByState map[string]int `json:"peers_by_state"`
	PeersByPath  map[string]int `json:"peers_by_path"`
	Interface    string         `json:"interface"`
	ListenPort   int            `json:"listen_port"`
	MTU          int            `json:"mtu"`
	Firewall     string         `json:"firewall"`
	Breaker      Breaker        `json:"breaker"`
	Apply        Apply          `json:"apply"`
	// KeptAlive counts peers whose record is gone but whose data plane is
	// alive (kept, stale); by network, so "network X is cut off from the
	// registry" shows.
	KeptAlive          int              `json:"kept_alive"`
	KeptAliveByNetwork map[string]int   `json:"kept_alive_by_network"`
	Links              [][]string       `json:"links"`
	Version            string           `json:"version"`
	Uptime             string           `json:"uptime"`
	BadRecords         map[string]int64 `json:"bad_records"`
	// RefusedRecords are the records refused now, by host (the first
	// MaxRefusedListed); RefusedTotal counts them all.
	RefusedRecords []RefusedRecord `json:"refused_records"`
	RefusedTotal   int             `json:"refused_total"`
	PolicyError    string          `json:"policy_error,omitempty"`
	// PolicyWarning: the policy in force names groups no live host has, or
	// the registry's policy node is gone and the last policy is kept.
	PolicyWarning string `json:"policy_warning,omitempty"`
	Conntrack     [2]int `json:"conntrack"`           // entries in use, table size
	Region        string `json:"region,omitempty"`    // EC2 region
	TagError      string `json:"tag_error,omitempty"` // last failure writing EC2 tags
	// FirewallCounters: packets per meshd rule (drops, or would-drops in shadow mode).
	FirewallCounters map[string]uint64 `json:"firewall_counters,omitempty"`
	// FirewallDrops: packets dropped (would-drop in shadow mode) per reason:
	// underlay_default_deny, wireguard_non_member, spoofed_overlay_source, policy.
	FirewallDrops map[string]uint64 `json:"firewall_drops,omitempty"`
	// FirewallSets: how full each member set is; a full one leaves members out.
	FirewallSets map[string]FirewallSet `json:"firewall_sets,omitempty"`
	// FirewallError names what is wrong with the firewall (a full set), "" if nothing.
	FirewallError string     `json:"firewall_error,omitempty"`
	DNS           *DNSStatus `json:"dns,omitempty"` // absent when dns.enabled is false
	// With trust: the mode, this host's certificate, hosts whose records
	// are unsigned (permissive), and the latest records refused.
	TrustMode     string    `json:"trust_mode,omitempty"`
	Cert          *Cert     `json:"cert,omitempty"`
	CertError     string    `json:"cert_error,omitempty"` // last failed renewal
	UnsignedHosts []string  `json:"unsigned_hosts,omitempty"`
	Refusals      []Refusal `json:"refusals,omitempty"`
	// DocumentsRefused counts fleet documents ignored (unsigned, not an
	// operator's, deleted), by reason; the latest are among Refusals.
	DocumentsRefused map[string]int64 `json:"documents_refused,omitempty"`
	RevokedCerts     int              `json:"revoked_certs,omitempty"` // serials on the signed revocation list in force
	// PrivateIP6, PublicIP6: this host's IPv6 underlay addresses as its
	// record gives them, omitted when none.
	PrivateIP6 string `json:"private_ip6,omitempty"`
	PublicIP6  string `json:"public_ip6,omitempty"`
	// Lazy is present when peers.lazy is on (the default).
	Lazy *LazyStatus `json:"lazy,omitempty"`
}

// LazyStatus is what lazy peers did: peers in and out of the device, the
// packets held for idle peers, and the handshake initiations that named
// (or failed to name) an idle peer.
type LazyStatus struct {
	InDevice   int    `json:"in_device"`  // peers wireguard-go holds now
	Idle       int    `json:"idle"`       // known peers out of the device
	IdleAfter  string `json:"idle_after"` // how long without traffic before a peer leaves
	Held       uint64 `json:"held"`       // packets held for an idle peer
	Replayed   uint64 `json:"replayed"`   // of those, sent on once the peer was in
	HeldDrops  uint64 `json:"held_drops"` // over the bound (16 a peer, 4096 in all)
	Identified uint64 `json:"identified"` // initiations that named a known peer
	Refused    uint64 `json:"refused"`    // initiations that named nobody: garbage, unknown key, forged, replayed
	Throttled  uint64 `json:"throttled"`  // dropped by the rate limit or a full queue
}

// DNSStatus is the zone meshd serves and where.
type DNSStatus struct {
	Domain   string `json:"domain"`
	Listen   string `json:"listen"`          // ip:port served, "" if not serving
	Resolved string `json:"resolved"`        // what systemd-resolved routes to meshd, in words
	Error    string `json:"error,omitempty"` // why it is not serving
	Answered uint64 `json:"answered"`
	Dropped  uint64 `json:"dropped"` // queries from non-members, unanswered
}

// Cert is this host's certificate as peers see it.
type Cert struct {
	Serial   string   `json:"serial"`
	NotAfter string   `json:"not_after"` // RFC 3339
	Network  string   `json:"network,omitempty"`
	Groups   []string `json:"groups"`
}

// Refusal is one record or document that was not believed.
type Refusal struct {
	At     string `json:"at"`
	Node   string `json:"node"`
	Reason string `json:"reason"`
	Detail string `json:"detail"`
}

// MaxRefusedListed bounds the refusals status lists: a hostile writer
// must not make status unbounded.
const MaxRefusedListed = 100

// RefusedRecord is one host record refused now, and why.
type RefusedRecord struct {
	Host   string `json:"host"`   // instance id (the node name if it names none)
	Node   string `json:"node"`   // ZooKeeper node, or the snapshot file
	Reason string `json:"reason"` // e.g. too_many_groups, underlay, duplicate_key, next_key
	Detail string `json:"detail"`
	Since  string `json:"since"` // RFC 3339
}

// FirewallSet is the use of one ipset set.
type FirewallSet struct {
	Entries  int  `json:"entries"`
	Capacity int  `json:"capacity"`
	Full     bool `json:"full,omitempty"`
}

// Breaker is the mass-removal breaker's state.
type Breaker struct {
	Tripped bool `json:"tripped"`
	Held    int  `json:"held"`
	Limit   int  `json:"limit"`
}

// Apply is the health of device updates: a refused update is kept and
// retried, and until it lands the device differs from the desired state.
type Apply struct {
	Failures    uint64 `json:"failures"`      // refused device updates since start
	LastError   string `json:"last_error"`    // "" if none
	LastErrorAt string `json:"last_error_at"` // RFC 3339, "" if none
	Pending     int    `json:"pending"`       // peer changes waiting for a retry
	RetryAt     string `json:"retry_at"`      // RFC 3339, "" if nothing waits
}

// PingResult is `meshctl ping`: replies and the path that carried them.
type PingResult struct {
	Peer      string      `json:"peer"`
	OverlayIP string      `json:"overlay_ip"`
	Replies   []PingReply `json:"replies"`
	Received  int         `json:"received"`
	Path      string      `json:"path"`
	Endpoint  string      `json:"endpoint"`
	Reason    string      `json:"reason"`
}

// PingReply is one echo.
type PingReply struct {
	Seq   int     `json:"seq"`
	RTTms float64 `json:"rtt_ms,omitempty"`
	Error string  `json:"error,omitempty"`
}

// Explanation is `meshctl explain`: the chain of checks and the cause.
type Explanation struct {
	Peer  string `json:"peer"`
	Steps []Step `json:"steps"`
	Cause string `json:"cause"`
}

// Step is one check of the chain, with its evidence.
type Step struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Fleet is `meshctl fleet`: every host that holds a lease.
type Fleet struct {
	Hosts     []FleetHost               `json:"hosts"`
	ByNetwork map[string]map[string]int `json:"by_network"` // network -> state -> count
	ByVersion map[string]int            `json:"by_version"`
	Total     int                       `json:"total"`
	InMesh    int                       `json:"in_mesh"`
	Stale     int                       `json:"stale"`    // missing from the registry, alive on the wire
	Unsigned  int                       `json:"unsigned"` // in the mesh, not yet signing
	Summary   string                    `json:"summary"`
}

// FleetHost is one host of the fleet report.
type FleetHost struct {
	Name      string `json:"name"`
	Network   string `json:"network"`
	OverlayIP string `json:"overlay_ip"`
	Version   string `json:"version"`
	// State: in-mesh (live record), stale (no record, but alive on the
	// wire: this host's WireGuard still hears it) or absent (lease only).
	State string `json:"state"`
	// Signed: "yes" (the record is signed; Cert is its serial), "no" (not
	// yet signing), "-" (absent).
	Signed string `json:"signed"`
	Cert   string `json:"cert,omitempty"`
}

// Source is what the server asks the daemon.
type Source interface {
	Peers(ctx context.Context) ([]Peer, error)
	Status(ctx context.Context) (Status, error)
	ReleaseBreaker(ctx context.Context) (int, error)
	Policy(ctx context.Context) ([]byte, error)
	// ValidatePolicy returns warnings (groups no live host has) or why the
	// document is bad.
	ValidatePolicy(ctx context.Context, doc []byte) ([]string, error)
	SetPolicy(ctx context.Context, doc []byte) error
	Ping(ctx context.Context, peer string, count int) (PingResult, error)
	Explain(ctx context.Context, peer string) (Explanation, error)
	Decommission(ctx context.Context, id string) error
	Links(ctx context.Context) ([]byte, error)
	SetLinks(ctx context.Context, pairs [][]string) error
	Fleet(ctx context.Context) (Fleet, error)
	RotateKey(ctx context.Context) (string, error)
	SetLinksSigned(ctx context.Context, sealed []byte) error
	SetRevoked(ctx context.Context, sealed []byte) error
	Revoked(ctx context.Context) ([]byte, error)
}

// NotFoundError is implemented by errors naming something unknown (404).
type NotFoundError interface{ NotFound() bool }

// BadRequest is implemented by errors that are the caller's fault (400).
type BadRequest interface{ BadInput() bool }

// Serve answers the admin API on socketPath until ctx ends. The socket is
// 0660, owned by the meshd group when it exists, so only root and that
// group reach it; a stale socket from a crashed run is replaced, a live one
// (another meshd) is an error.
func Serve(ctx context.Context, socketPath string, src Source, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o750); err != nil {
		return fmt.Errorf("admin socket dir: %w", err)
	}
	if c, err := net.Dial("unix", socketPath); err == nil {
		c.Close()
		return fmt.Errorf("admin socket %s is in use: another meshd runs with this config", socketPath)
	}
	os.Remove(socketPath)
	l, err := net.Listen("unix", socketPath)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", socketPath, err)
	}
	os.Chmod(socketPath, 0o660)
	if g, err := user.LookupGroup("meshd"); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			os.Chown(socketPath, 0, gid)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) {
		p, err := src.Peers(r.Context())
		reply(w, p, err)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		s, err := src.Status(r.Context())
		reply(w, s, err)
	})
	mux.HandleFunc("POST /v1/breaker/release", func(w http.ResponseWriter, r *http.Request) {
		n, err := src.ReleaseBreaker(r.Context())
		reply(w, map[string]int{"released": n}, err)
	})
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		doc, err := src.Policy(r.Context())
		if err == nil && len(doc) == 0 {
			doc = []byte("null")
		}
		replyRaw(w, doc, err)
	})
	mux.HandleFunc("POST /v1/policy/validate", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		warnings, err := src.ValidatePolicy(r.Context(), body)
		reply(w, map[string]any{"result": "valid", "warnings": warnings}, err)
	})
	mux.HandleFunc("PUT /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		warnings, err := src.ValidatePolicy(r.Context(), body)
		if err == nil {
			err = src.SetPolicy(r.Context(), body)
		}
		reply(w, map[string]any{"result": "stored", "warnings": warnings}, err)
	})
	mux.HandleFunc("POST /v1/ping/{peer}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("count"))
		res, err := src.Ping(r.Context(), r.PathValue("peer"), min(max(n, 1), 100))
		reply(w, res, err)
	})
	mux.HandleFunc("GET /v1/explain/{peer}", func(w http.ResponseWriter, r *http.Request) {
		res, err := src.Explain(r.Context(), r.PathValue("peer"))
		reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/decommission/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{"result": "decommissioned"}, src.Decommission(r.Context(), r.PathValue("id")))
	})
	mux.HandleFunc("POST /v1/key/rotate", func(w http.ResponseWriter, r *http.Request) {
		pub, err := src.RotateKey(r.Context())
		reply(w, map[string]string{"public_key": pub}, err)
	})
	mux.HandleFunc("GET /v1/fleet", func(w http.ResponseWriter, r *http.Request) {
		f, err := src.Fleet(r.Context())
		reply(w, f, err)
	})
	mux.HandleFunc("GET /v1/links", func(w http.ResponseWriter, r *http.Request) {
		doc, err := src.Links(r.Context())
		if err == nil && len(doc) == 0 {
			doc = []byte("[]")
		}
		replyRaw(w, doc, err)
	})
	mux.HandleFunc("PUT /v1/links", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if bytes.Contains(body, []byte(`"signed_document"`)) {
			reply(w, map[string]string{"result": "stored"}, src.SetLinksSigned(r.Context(), body))
			return
		}
		var pairs [][]string
		if err := json.Unmarshal(body, &pairs); err != nil {
			reply(w, nil, badRequest{fmt.Errorf("links: want a JSON list of pairs: %v", err)})
			return
		}
		reply(w, map[string]string{"result": "stored"}, src.SetLinks(r.Context(), pairs))
	})
	mux.HandleFunc("GET /v1/revoked", func(w http.ResponseWriter, r *http.Request) {
		doc, err := src.Revoked(r.Context())
		if err == nil && len(doc) == 0 {
			doc = []byte(`{"serials":[]}`)
		}
		replyRaw(w, doc, err)
	})
	mux.HandleFunc("PUT /v1/revoked", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		reply(w, map[string]string{"result": "stored"}, src.SetRevoked(r.Context(), body))
	})
	// Profiles for operators chasing CPU or memory on a big fleet, e.g.
	//   curl --unix-socket /run/meshd/meshd.sock http://meshd/debug/pprof/heap
	// Only on this socket: the metrics listener may face the network.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
		os.Remove(socketPath)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type badRequest struct{ error }

func (badRequest) BadInput() bool { return true }

type errorBody struct {
	Error string `json:"error"`
}

func replyRaw(w http.ResponseWriter, doc []byte, err error) {
	if err != nil {
		reply(w, nil, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(doc)
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		var br BadRequest
		var nf NotFoundError
		switch {
		case errors.As(err, &br) && br.BadInput():
			code = http.StatusBadRequest
		case errors.As(err, &nf) && nf.NotFound():
			code = http.StatusNotFound
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(errorBody{err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// Client talks to a meshd's admin socket.
type Client struct {
	socket string
	http   *http.Client
}

// Dial returns a client for the socket; the first request connects.
func Dial(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{Timeout: 10 * time.Second, Transport: UnixTransport(socket)}}
}

// UnixTransport carries HTTP to the admin socket whatever the URL's host:
// for callers that need plain HTTP there, such as profile downloads.
func UnixTransport(socket string) *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}
}

// Send sends a body to one endpoint and decodes the answer into v.
func (c *Client) Send(ctx context.Context, method, path string, body []byte, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://meshd"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	return c.roundTrip(req, v)
}

// GetRaw fetches one endpoint's body as is.
func (c *Client) GetRaw(ctx context.Context, path string) ([]byte, error) {
	var raw json.RawMessage
	err := c.Get(ctx, path, &raw)
	return raw, err
}

// Get fetches one endpoint into v.
func (c *Client) Get(ctx context.Context, path string, v any) error { return c.do(ctx, "GET", path, v) }

// Post calls one action endpoint.
func (c *Client) Post(ctx context.Context, path string, v any) error {
	return c.do(ctx, "POST", path, v)
}

func (c *Client) do(ctx context.Context, method, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://meshd"+path, nil)
	if err != nil {
		return err
	}
	return c.roundTrip(req, v)
}

func (c *Client) roundTrip(req *http.Request, v any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return c.explain(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("meshd answered %s", resp.Status)
	}
	return json.Unmarshal(body, v)
}

// explain turns a connection failure into what the operator should do.
func (c *Client) explain(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("meshd is not running (no socket at %s); start it with `systemctl start meshd`, or pass --socket", c.socket)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cannot access %s: permission denied; run as root or as a member of the meshd group", c.socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing answers on %s: meshd is not running (the socket is left from an earlier run); start it with `systemctl start meshd`", c.socket)
	}
	return fmt.Errorf("talk to meshd on %s: %w", c.socket, err)
}
