// wp-service: drives the upstream Woodpecker Go client (github.com/zilliztech/woodpecker v0.1.35, used as a
// black-box library) in SERVICE mode against a cluster of LogStore servers (upstream's or ours), with etcd and
// MinIO from scripts/testbed.sh. It is the Go side of the service-mode acceptance test.
//
//	wp-service write-read --log NAME --entries 100000 --payload-bytes N
//	wp-service tail       --log NAME --entries N [--from earliest|latest]
//	wp-service write      --log NAME --acked FILE [--entries N | --until-killed]
//	wp-service verify     --log NAME --acked FILE
//	wp-service recover    --log NAME --acked FILE [--entries N]
//	wp-service bench      --payload-bytes 1024|65536 [--entries N] [--duration S]
//	wp-service segments   --log NAME
//	wp-service render-config --out FILE
//	wp-service case       --name CASE --cluster cluster.sh --log NAME   (upstream's failover/chaos cases: cases.go)
//
// Every subcommand prints exactly one JSON summary line on stdout ("ok": true|false) and exits 1 if any check
// failed; progress goes to stderr. Upstream's own logger is redirected (level error, stderr, or --client-log FILE).
// See README.md for the config flags shared by all subcommands.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/zilliztech/woodpecker/common/config"
	"github.com/zilliztech/woodpecker/common/logger"
	"github.com/zilliztech/woodpecker/common/werr"
	"github.com/zilliztech/woodpecker/meta"
	"github.com/zilliztech/woodpecker/woodpecker"
	wplog "github.com/zilliztech/woodpecker/woodpecker/log"
)

//go:embed woodpecker.yaml.tmpl
var configTemplate string

const readerName = "wp-service"

// recoverIndexGap separates the entry indices of a recovering writer from those of the writer it replaces:
// entries the old writer submitted but never saw acknowledged (at most its in-flight bound) may still be in the
// log, and indices must stay strictly increasing in log order for verify's "in order, exactly once" check.
const recoverIndexGap = 1_000_000

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "wp-service: "+format+"\n", args...)
}

// ---------------------------------------------------------------------------------------------
// summary: one JSON line on stdout, exit status from the checks
// ---------------------------------------------------------------------------------------------

type summary struct {
	fields   map[string]any
	order    []string
	failures []string
}

func newSummary(cmd string) *summary {
	s := &summary{fields: map[string]any{}}
	s.set("cmd", cmd)
	return s
}

func (s *summary) set(k string, v any) {
	if _, ok := s.fields[k]; !ok {
		s.order = append(s.order, k)
	}
	s.fields[k] = v
}

func (s *summary) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	progress("CHECK FAILED: %s", msg)
	if len(s.failures) < 20 {
		s.failures = append(s.failures, msg)
	} else if len(s.failures) == 20 {
		s.failures = append(s.failures, "... more failures omitted")
	}
}

func (s *summary) ok() bool { return len(s.failures) == 0 }

// finish prints the summary and exits: 0 if every check passed, 1 otherwise.
func (s *summary) finish() {
	var b bytes.Buffer
	b.WriteString(`{"cmd":`)
	writeJSON(&b, s.fields["cmd"])
	b.WriteString(`,"ok":`)
	writeJSON(&b, s.ok())
	for _, k := range s.order {
		if k == "cmd" {
			continue
		}
		b.WriteString(",")
		writeJSON(&b, k)
		b.WriteString(":")
		writeJSON(&b, s.fields[k])
	}
	if !s.ok() {
		b.WriteString(`,"failures":`)
		writeJSON(&b, s.failures)
	}
	b.WriteString("}\n")
	os.Stdout.Write(b.Bytes())
	if !s.ok() {
		os.Exit(1)
	}
	os.Exit(0)
}

func writeJSON(b *bytes.Buffer, v any) {
	out, err := json.Marshal(v)
	if err != nil {
		out, _ = json.Marshal(fmt.Sprintf("<unencodable: %v>", err))
	}
	b.Write(out)
}

// fatal ends a subcommand that cannot continue (setup errors count as check failures too).
func (s *summary) fatal(format string, args ...any) {
	s.fail(format, args...)
	s.finish()
}

// ---------------------------------------------------------------------------------------------
// deterministic entries
// ---------------------------------------------------------------------------------------------

// payloadFor returns entry i's payload: "wps-<i>|" followed by a splitmix64 stream seeded by i, size bytes in
// all (longer if the prefix alone is longer). Any payload can be checked knowing only i and its length.
func payloadFor(i int64, size int) []byte {
	prefix := "wps-" + strconv.FormatInt(i, 10) + "|"
	if size < len(prefix) {
		size = len(prefix)
	}
	p := make([]byte, size)
	copy(p, prefix)
	x := uint64(i)*0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D
	var w [8]byte
	for j := len(prefix); j < size; j += 8 {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		binary.LittleEndian.PutUint64(w[:], z)
		copy(p[j:], w[:])
	}
	return p
}

func propertiesFor(i int64) map[string]string {
	return map[string]string{"k": strconv.FormatInt(i, 10), "src": "wp-service"}
}

// checkEntry returns the entry index of a read message, or an error if it is not one of ours.
func checkEntry(m *wplog.LogMessage) (int64, error) {
	ks, ok := m.Properties["k"]
	if !ok {
		return -1, fmt.Errorf("entry %s has no property k (properties %v, %d payload bytes)", idStr(m.Id), m.Properties, len(m.Payload))
	}
	i, err := strconv.ParseInt(ks, 10, 64)
	if err != nil {
		return -1, fmt.Errorf("entry %s: property k=%q is not an integer", idStr(m.Id), ks)
	}
	if m.Properties["src"] != "wp-service" || len(m.Properties) != 2 {
		return i, fmt.Errorf("entry %s (k=%d): unexpected properties %v", idStr(m.Id), i, m.Properties)
	}
	if !bytes.Equal(m.Payload, payloadFor(i, len(m.Payload))) {
		n := min(len(m.Payload), 32)
		return i, fmt.Errorf("entry %s (k=%d): payload of %d bytes differs from the generated one (starts %q)", idStr(m.Id), i, len(m.Payload), m.Payload[:n])
	}
	return i, nil
}

func idStr(id *wplog.LogMessageId) string {
	if id == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%d/%d", id.SegmentId, id.EntryId)
}

func idLess(a, b *wplog.LogMessageId) bool {
	return a.SegmentId < b.SegmentId || (a.SegmentId == b.SegmentId && a.EntryId < b.EntryId)
}

// ---------------------------------------------------------------------------------------------
// configuration and client
// ---------------------------------------------------------------------------------------------

type commonFlags struct {
	fs             *flag.FlagSet
	configPath     string
	seeds          string
	replicas       int
	rollBytes      int64
	etcdRoot       string
	minioRoot      string
	clientLog      string
	clientLogLevel string
	timeout        time.Duration
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newFlags(name string) *commonFlags {
	c := &commonFlags{fs: flag.NewFlagSet(name, flag.ExitOnError)}
	fs := c.fs
	fs.StringVar(&c.configPath, "config", "", "use this woodpecker.yaml instead of rendering one from the test bed env (flags set explicitly still override)")
	fs.StringVar(&c.seeds, "seeds", os.Getenv("WP_SERVICE_SEEDS"), "comma list of LogStore gRPC service addresses host:port (env WP_SERVICE_SEEDS; cluster.sh seeds)")
	rep, _ := strconv.Atoi(envOr("WP_SERVICE_REPLICAS", "3"))
	fs.IntVar(&c.replicas, "replicas", rep, "ensemble size es (3 or 5; wq = es, aq = es/2+1) (env WP_SERVICE_REPLICAS)")
	fs.Int64Var(&c.rollBytes, "roll-bytes", 4<<20, "segmentRollingPolicy.maxSize in bytes")
	fs.StringVar(&c.etcdRoot, "etcd-root", envOr("WP_SERVICE_ETCD_ROOT", "wp-service"), "etcd.rootPath (env WP_SERVICE_ETCD_ROOT)")
	fs.StringVar(&c.minioRoot, "minio-root", envOr("WP_SERVICE_MINIO_ROOT", "wp-service"), "minio.rootPath, sent to the servers with every request (env WP_SERVICE_MINIO_ROOT)")
	fs.StringVar(&c.clientLog, "client-log", os.Getenv("WP_SERVICE_CLIENT_LOG"), "file for upstream's client log (default stderr) (env WP_SERVICE_CLIENT_LOG)")
	fs.StringVar(&c.clientLogLevel, "client-log-level", envOr("WP_SERVICE_CLIENT_LOG_LEVEL", "error"), "level of upstream's client log (env WP_SERVICE_CLIENT_LOG_LEVEL)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Minute, "overall bound for the subcommand")
	return c
}

func (c *commonFlags) isSet(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func flowList(csv string) string {
	var parts []string
	for _, p := range strings.Split(csv, ",") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ", ")
}

// renderConfig fills the embedded template from the test bed env (WP_ETCD_ENDPOINTS, WP_MINIO_*) and the flags.
func (c *commonFlags) renderConfig() (string, error) {
	need := func(k string) (string, error) {
		v := os.Getenv(k)
		if v == "" {
			return "", fmt.Errorf("%s is not set (eval \"$(scripts/testbed.sh env)\", or pass --config)", k)
		}
		return v, nil
	}
	etcd, err := need("WP_ETCD_ENDPOINTS")
	if err != nil {
		return "", err
	}
	endpoint, err := need("WP_MINIO_ENDPOINT")
	if err != nil {
		return "", err
	}
	hostport := endpoint
	if i := strings.Index(hostport, "://"); i >= 0 {
		hostport = hostport[i+3:]
	}
	host, port := hostport, "9000"
	if i := strings.LastIndex(hostport, ":"); i >= 0 {
		host, port = hostport[:i], hostport[i+1:]
	}
	if c.seeds == "" {
		return "", errors.New("no LogStore seeds: pass --seeds or set WP_SERVICE_SEEDS (eval \"$(e2e/service/cluster.sh env)\")")
	}
	r := strings.NewReplacer(
		"@ETCD_ENDPOINTS@", flowList(etcd), "@ETCD_ROOT@", c.etcdRoot,
		"@MINIO_HOST@", host, "@MINIO_PORT@", port,
		"@MINIO_ACCESS_KEY@", envOr("WP_MINIO_ACCESS_KEY", "minioadmin"), "@MINIO_SECRET_KEY@", envOr("WP_MINIO_SECRET_KEY", "minioadmin"),
		"@MINIO_BUCKET@", envOr("WP_MINIO_BUCKET", "woodpecker"), "@MINIO_ROOT@", c.minioRoot,
		"@MINIO_REGION@", envOr("WP_MINIO_REGION", "us-east-1"),
		"@SERVICE_SEEDS@", flowList(c.seeds), "@REPLICAS@", strconv.Itoa(c.replicas),
		"@ROLL_MAX_BYTES@", strconv.FormatInt(c.rollBytes, 10),
		"@DATA_DIR@", "/tmp/wp-service-client-unused", "@LOG_LEVEL@", c.clientLogLevel,
	)
	return r.Replace(configTemplate), nil
}

func (c *commonFlags) loadConfig() (*config.Configuration, error) {
	path := c.configPath
	if path == "" {
		text, err := c.renderConfig()
		if err != nil {
			return nil, err
		}
		f, err := os.CreateTemp("", "wp-service-*.yaml")
		if err != nil {
			return nil, err
		}
		defer os.Remove(f.Name())
		if _, err := f.WriteString(text); err != nil {
			f.Close()
			return nil, err
		}
		f.Close()
		path = f.Name()
	}
	cfg, err := config.NewConfiguration(path)
	if err != nil {
		return nil, fmt.Errorf("loading config %s: %w", path, err)
	}
	if c.configPath != "" {
		if c.isSet("seeds") {
			if len(cfg.Woodpecker.Client.Quorum.BufferPools.Get()) == 0 {
				cfg.Woodpecker.Client.Quorum.BufferPools.Set([]config.QuorumBufferPool{{Name: "default"}})
			}
			cfg.Woodpecker.Client.Quorum.SetBufferPoolSeeds(0, strings.Split(flowList(c.seeds), ", "))
		}
		if c.isSet("replicas") {
			cfg.Woodpecker.Client.Quorum.SelectStrategy.Replicas = config.NewDynamic(c.replicas)
		}
		if c.isSet("roll-bytes") {
			cfg.Woodpecker.Client.SegmentRollingPolicy.MaxSize = config.ByteSize(c.rollBytes)
		}
	}
	if !cfg.Woodpecker.Storage.IsStorageService() {
		return nil, fmt.Errorf("woodpecker.storage.type must be service (got %q)", cfg.Woodpecker.Storage.Type)
	}
	cfg.Log.Level = c.clientLogLevel
	return cfg, nil
}

// quietUpstreamLogger sends upstream's global zap logger (stdout by default) to stderr or a file.
func (c *commonFlags) quietUpstreamLogger() error {
	lvl := zapcore.ErrorLevel
	if err := lvl.Set(c.clientLogLevel); err != nil {
		return fmt.Errorf("--client-log-level %q: %w", c.clientLogLevel, err)
	}
	zc := zap.NewProductionConfig()
	zc.Encoding = "console"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.DisableStacktrace = true
	zc.Sampling = nil
	out := "stderr"
	if c.clientLog != "" {
		out = c.clientLog
	}
	zc.OutputPaths = []string{out}
	zc.ErrorOutputPaths = []string{out}
	l, err := zc.Build()
	if err != nil {
		return fmt.Errorf("building the client logger: %w", err)
	}
	logger.ReplaceGlobals(l)
	return nil
}

type session struct {
	cfg    *config.Configuration
	client woodpecker.Client
}

func (c *commonFlags) connect(ctx context.Context, s *summary) *session {
	if err := c.quietUpstreamLogger(); err != nil {
		s.fatal("%v", err)
	}
	cfg, err := c.loadConfig()
	if err != nil {
		s.fatal("%v", err)
	}
	pool := cfg.Woodpecker.Client.Quorum.BufferPools.Get()
	if len(pool) == 0 || len(pool[0].Seeds) == 0 {
		s.fatal("config has no quorumBufferPools[0].seeds")
	}
	s.set("seeds", pool[0].Seeds)
	s.set("replicas", cfg.Woodpecker.Client.Quorum.GetEnsembleSize())
	etcdCli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Etcd.Endpoints, DialTimeout: 10 * time.Second})
	if err != nil {
		s.fatal("etcd client for %v: %v", cfg.Etcd.Endpoints, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cl, err := woodpecker.NewClient(cctx, cfg, etcdCli, true)
	if err != nil {
		s.fatal("creating the service-mode client (etcd %v): %v", cfg.Etcd.Endpoints, err)
	}
	return &session{cfg: cfg, client: cl}
}

func (ss *session) close(ctx context.Context, s *summary) {
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := ss.client.Close(cctx); err != nil {
		s.fail("closing the client: %v", err)
	}
}

func (ss *session) openLog(ctx context.Context, s *summary, name string, create, mustBeNew bool) wplog.LogHandle {
	if create {
		err := ss.client.CreateLog(ctx, name)
		if err != nil && !(errors.Is(err, werr.ErrMetadataCreateLogAlreadyExists) && !mustBeNew) {
			s.fatal("creating log %q: %v", name, err)
		}
	}
	lh, err := ss.client.OpenLog(ctx, name)
	if err != nil {
		s.fatal("opening log %q: %v", name, err)
	}
	return lh
}

// ---------------------------------------------------------------------------------------------
// bounded-in-flight async writer
// ---------------------------------------------------------------------------------------------

type ackRec struct {
	Index   int64 `json:"i"`
	Segment int64 `json:"seg"`
	Entry   int64 `json:"entry"`
}

type ackEvent struct {
	index  int64
	id     *wplog.LogMessageId
	err    error
	submit time.Time
	acked  time.Time
	bytes  int
}

type writeStats struct {
	submitted, acked, failed int64
	bytes                    int64
	firstErr                 error
	lastErr                  error
	orderViolations          int64
	segments                 map[int64]int64 // segment id -> acked entries
	lastID                   *wplog.LogMessageId
	latencies                []time.Duration
	start, end               time.Time
	nextIndex                int64
}

func newWriteStats() *writeStats { return &writeStats{segments: map[int64]int64{}} }

type writeOpts struct {
	startIndex  int64
	count       int64 // <= 0: until stop
	payload     int
	inflight    int
	ackTimeout  time.Duration
	stopOnError bool
	stopOn      func(error) bool // with stopOnError: which errors stop (nil = all)
	stop        <-chan struct{}
	deadline    time.Time // zero: none
	onAck       func(ackEvent)
	keepLatency bool
}

// runWrites submits entries with WriteAsync, at most o.inflight unacknowledged at a time, and consumes the
// results in submission order. It returns when count entries were processed, stop is closed, the deadline
// passes, or (with stopOnError) after the first failed entry once everything in flight has been drained.
func runWrites(ctx context.Context, w wplog.LogWriter, o writeOpts, st *writeStats) {
	type pendingWrite struct {
		index  int64
		submit time.Time
		bytes  int
		ch     <-chan *wplog.WriteResult
	}
	if st.start.IsZero() {
		st.start = time.Now()
	}
	sem := make(chan struct{}, o.inflight)
	pend := make(chan pendingWrite, o.inflight)
	halt := make(chan struct{})
	var haltOnce sync.Once
	stopSubmitting := func() { haltOnce.Do(func() { close(halt) }) }
	go func() {
		defer close(pend)
		for k := int64(0); o.count <= 0 || k < o.count; k++ {
			select {
			case <-halt:
				return
			case <-o.stop:
				return
			case sem <- struct{}{}:
			}
			if !o.deadline.IsZero() && time.Now().After(o.deadline) {
				return
			}
			i := o.startIndex + k
			msg := &wplog.WriteMessage{Payload: payloadFor(i, o.payload), Properties: propertiesFor(i)}
			t := time.Now()
			ch := w.WriteAsync(ctx, msg)
			pend <- pendingWrite{index: i, submit: t, bytes: len(msg.Payload), ch: ch}
		}
	}()
	st.nextIndex = o.startIndex
	for p := range pend {
		st.submitted++
		var r *wplog.WriteResult
		timer := time.NewTimer(o.ackTimeout)
		select {
		case r = <-p.ch:
		case <-timer.C:
			r = &wplog.WriteResult{Err: fmt.Errorf("no result within %v", o.ackTimeout)}
		case <-ctx.Done():
			r = &wplog.WriteResult{Err: ctx.Err()}
		}
		timer.Stop()
		if r == nil {
			r = &wplog.WriteResult{Err: errors.New("result channel closed without a result")}
		}
		now := time.Now()
		<-sem
		st.nextIndex = p.index + 1
		ev := ackEvent{index: p.index, id: r.LogMessageId, err: r.Err, submit: p.submit, acked: now, bytes: p.bytes}
		if r.Err == nil && r.LogMessageId == nil {
			ev.err = errors.New("success without a message id")
		}
		if ev.err != nil {
			st.failed++
			st.lastErr = ev.err
			if st.firstErr == nil {
				st.firstErr = fmt.Errorf("entry %d: %w", p.index, ev.err)
			}
			if o.stopOnError && (o.stopOn == nil || o.stopOn(ev.err)) {
				stopSubmitting()
			}
		} else {
			st.acked++
			st.bytes += int64(p.bytes)
			st.segments[r.LogMessageId.SegmentId]++
			if st.lastID != nil && !idLess(st.lastID, r.LogMessageId) {
				st.orderViolations++
				progress("ack order violation: entry %d got %s after %s", p.index, idStr(r.LogMessageId), idStr(st.lastID))
			}
			st.lastID = r.LogMessageId
			if o.keepLatency {
				st.latencies = append(st.latencies, now.Sub(p.submit))
			}
		}
		if o.onAck != nil {
			o.onAck(ev)
		}
	}
	st.end = time.Now()
}

func sortedSegments(m map[int64]int64) []int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	return ids
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	k = max(0, min(k, len(sorted)-1))
	return float64(sorted[k].Microseconds()) / 1000
}

func latencySummary(d []time.Duration) map[string]float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	out := map[string]float64{"p50": percentile(s, 50), "p90": percentile(s, 90), "p99": percentile(s, 99), "p999": percentile(s, 99.9)}
	if len(s) > 0 {
		out["max"] = float64(s[len(s)-1].Microseconds()) / 1000
		out["mean"] = math.Round(float64(sum.Microseconds())/float64(len(s))) / 1000
	}
	return out
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

func openWriter(ctx context.Context, s *summary, lh wplog.LogHandle) (wplog.LogWriter, time.Duration) {
	t := time.Now()
	w, err := lh.OpenLogWriter(ctx)
	if err != nil {
		s.fatal("opening a writer on %q: %v", lh.GetName(), err)
	}
	return w, time.Since(t)
}

func closeWriter(ctx context.Context, s *summary, w wplog.LogWriter) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := w.Close(cctx); err != nil {
		s.fail("closing the writer: %v", err)
	}
}

func progressTicker(every time.Duration, f func()) (stop func()) {
	t := time.NewTicker(every)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.C:
				f()
			case <-done:
				return
			}
		}
	}()
	return func() { t.Stop(); close(done) }
}

// ---------------------------------------------------------------------------------------------
// reading and checking
// ---------------------------------------------------------------------------------------------

type readCheck struct {
	expect       []ackRec // acknowledged entries, in log order (ascending index)
	pos          int      // next expected acked entry
	lastIndex    int64
	lastID       *wplog.LogMessageId
	read         int64
	unacked      int64 // entries present that were never acknowledged (allowed)
	segments     map[int64]int64
	readErrors   int64
	firstReadErr error
}

// consume checks one read message against the acknowledged set; it returns an error for a hard violation.
func (rc *readCheck) consume(m *wplog.LogMessage) error {
	rc.read++
	idx, err := checkEntry(m)
	if err != nil {
		return fmt.Errorf("foreign or corrupt entry: %w", err)
	}
	if rc.lastID != nil && !idLess(rc.lastID, m.Id) {
		return fmt.Errorf("message id %s (k=%d) not after the previous %s", idStr(m.Id), idx, idStr(rc.lastID))
	}
	if rc.read > 1 && idx <= rc.lastIndex {
		return fmt.Errorf("entry k=%d at %s after k=%d: out of order or duplicated", idx, idStr(m.Id), rc.lastIndex)
	}
	if rc.pos < len(rc.expect) && idx > rc.expect[rc.pos].Index {
		e := rc.expect[rc.pos]
		return fmt.Errorf("acknowledged entry k=%d (%d/%d) missing: read k=%d at %s instead", e.Index, e.Segment, e.Entry, idx, idStr(m.Id))
	}
	if rc.pos < len(rc.expect) && idx == rc.expect[rc.pos].Index {
		e := rc.expect[rc.pos]
		if e.Segment != m.Id.SegmentId || e.Entry != m.Id.EntryId {
			return fmt.Errorf("entry k=%d was acknowledged as %d/%d but read at %s", idx, e.Segment, e.Entry, idStr(m.Id))
		}
		rc.pos++
	} else {
		rc.unacked++
	}
	rc.lastIndex = idx
	rc.lastID = m.Id
	rc.segments[m.Id.SegmentId]++
	return nil
}

func (rc *readCheck) done() bool { return rc.pos >= len(rc.expect) }

// readNext calls ReadNext with a bound, retrying read errors (upstream returns segment read errors to the
// caller "who should decide whether to attempt the call again") until the bound passes.
func readNext(ctx context.Context, r wplog.LogReader, bound time.Duration, rc *readCheck) (*wplog.LogMessage, error) {
	deadline := time.Now().Add(bound)
	for {
		rctx, cancel := context.WithDeadline(ctx, deadline)
		m, err := r.ReadNext(rctx)
		cancel()
		if err == nil {
			return m, nil
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || time.Now().After(deadline) {
			return nil, err
		}
		rc.readErrors++
		if rc.firstReadErr == nil {
			rc.firstReadErr = err
		}
		progress("read error (retrying until %s): %v", deadline.Format(time.TimeOnly), err)
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// verifyLog reads from earliest until every expected entry was seen and then until nothing arrives for idle.
func verifyLog(ctx context.Context, s *summary, lh wplog.LogHandle, expect []ackRec, readTimeout, idle time.Duration) *readCheck {
	rc := &readCheck{expect: expect, segments: map[int64]int64{}}
	from := wplog.EarliestLogMessageID()
	r, err := lh.OpenLogReader(ctx, &from, readerName)
	if err != nil {
		s.fatal("opening a reader on %q from earliest: %v", lh.GetName(), err)
	}
	t0 := time.Now()
	lastAt := t0
	stopProgress := progressTicker(5*time.Second, func() {
		progress("verify: read %d entries, %d/%d acknowledged found", rc.read, rc.pos, len(expect))
	})
	for {
		bound := readTimeout
		if rc.done() {
			bound = idle
		}
		m, err := readNext(ctx, r, bound, rc)
		if err != nil {
			if rc.done() && errors.Is(err, context.DeadlineExceeded) {
				break // idle after the last acknowledged entry: the end of the log
			}
			missing := "nothing"
			if !rc.done() {
				e := expect[rc.pos]
				missing = fmt.Sprintf("k=%d (%d/%d) and %d more acknowledged entries", e.Index, e.Segment, e.Entry, len(expect)-rc.pos-1)
			}
			s.fail("reading after %d entries: %v (missing: %s)", rc.read, err, missing)
			break
		}
		lastAt = time.Now()
		if cerr := rc.consume(m); cerr != nil {
			s.fail("%v", cerr)
			break
		}
	}
	stopProgress()
	elapsed := lastAt.Sub(t0) // up to the last entry read, without the final idle wait
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := r.Close(cctx); err != nil {
		s.fail("closing the reader: %v", err)
	}
	s.set("read_entries", rc.read)
	s.set("acked_found", rc.pos)
	s.set("unacked_present", rc.unacked)
	s.set("read_segments", sortedSegments(rc.segments))
	s.set("read_errors_retried", rc.readErrors)
	if rc.firstReadErr != nil {
		s.set("first_read_error", rc.firstReadErr.Error())
	}
	s.set("read_secs", round2(elapsed.Seconds()))
	return rc
}

// ---------------------------------------------------------------------------------------------
// acked file
// ---------------------------------------------------------------------------------------------

type ackedFile struct {
	f        *os.File
	w        *bufio.Writer
	lastSync time.Time
	every    time.Duration
}

func openAckedFile(path string, truncate bool) (*ackedFile, error) {
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if truncate {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	return &ackedFile{f: f, w: bufio.NewWriterSize(f, 1<<16), lastSync: time.Now(), every: 200 * time.Millisecond}, nil
}

func (a *ackedFile) add(r ackRec) error {
	b, _ := json.Marshal(r)
	b = append(b, '\n')
	if _, err := a.w.Write(b); err != nil {
		return err
	}
	if time.Since(a.lastSync) >= a.every {
		return a.sync()
	}
	return nil
}

func (a *ackedFile) sync() error {
	a.lastSync = time.Now()
	if err := a.w.Flush(); err != nil {
		return err
	}
	return a.f.Sync()
}

func (a *ackedFile) close() error {
	if err := a.sync(); err != nil {
		return err
	}
	return a.f.Close()
}

// readAcked loads an acked file; a torn last line (writer killed mid-write) is ignored.
func readAcked(path string) ([]ackRec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []ackRec
	lines := strings.Split(string(data), "\n")
	for n, line := range lines {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r ackRec
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			if n == len(lines)-1 {
				progress("ignoring a torn last line in %s: %q", path, line)
				continue
			}
			return nil, fmt.Errorf("%s line %d: %w", path, n+1, err)
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Index < out[b].Index })
	for k := 1; k < len(out); k++ {
		if out[k].Index == out[k-1].Index {
			return nil, fmt.Errorf("%s: index %d recorded twice", path, out[k].Index)
		}
	}
	return out, nil
}

// ---------------------------------------------------------------------------------------------
// subcommands
// ---------------------------------------------------------------------------------------------

func cmdWriteRead(args []string) {
	s := newSummary("write-read")
	c := newFlags("write-read")
	logName := c.fs.String("log", "", "log name (must not exist yet)")
	entries := c.fs.Int64("entries", 100000, "entries to write")
	size := c.fs.Int("payload-bytes", 256, "payload size")
	inflight := c.fs.Int("inflight", 256, "bound on unacknowledged WriteAsync calls")
	minSegments := c.fs.Int("min-segments", 3, "fail if the entries span fewer distinct segments")
	readTimeout := c.fs.Duration("read-timeout", 2*time.Minute, "bound for each read")
	_ = c.fs.Parse(args)
	if *logName == "" || *entries <= 0 {
		s.fatal("write-read needs --log NAME and --entries N > 0")
	}
	if !c.isSet("roll-bytes") {
		// about six segments for the whole run, so that at least three rolls happen
		c.rollBytes = max(int64(*size)*(*entries)/6, 64<<10)
	}
	s.set("log", *logName)
	s.set("entries", *entries)
	s.set("payload_bytes", *size)
	s.set("roll_bytes", c.rollBytes)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ss := c.connect(ctx, s)
	lh := ss.openLog(ctx, s, *logName, true, true)
	w, openDur := openWriter(ctx, s, lh)
	s.set("writer_open_ms", openDur.Milliseconds())

	acked := make([]ackRec, 0, *entries)
	st := newWriteStats()
	stopProgress := progressTicker(5*time.Second, func() {
		progress("write-read: %d/%d acknowledged, %d segments so far", len(acked), *entries, len(st.segments))
	})
	runWrites(ctx, w, writeOpts{startIndex: 0, count: *entries, payload: *size, inflight: *inflight, ackTimeout: 2 * time.Minute,
		stopOnError: true, keepLatency: true,
		onAck: func(ev ackEvent) {
			if ev.err == nil {
				acked = append(acked, ackRec{Index: ev.index, Segment: ev.id.SegmentId, Entry: ev.id.EntryId})
			}
		}}, st)
	stopProgress()
	closeWriter(ctx, s, w)
	wsecs := st.end.Sub(st.start).Seconds()
	s.set("acked", st.acked)
	s.set("write_secs", round2(wsecs))
	s.set("write_mib_s", round2(float64(st.bytes)/(1<<20)/wsecs))
	s.set("write_entries_s", math.Round(float64(st.acked)/wsecs))
	s.set("append_latency_ms", latencySummary(st.latencies))
	segs := sortedSegments(st.segments)
	s.set("segments", segs)
	s.set("rolls", max(len(segs)-1, 0))
	if st.failed > 0 {
		s.fail("%d writes failed; first: %v", st.failed, st.firstErr)
	}
	if st.acked != *entries {
		s.fail("%d of %d entries acknowledged", st.acked, *entries)
	}
	if st.orderViolations > 0 {
		s.fail("%d acknowledgements out of message-id order", st.orderViolations)
	}
	if len(segs) < *minSegments {
		s.fail("entries span %d distinct segments (%v), want >= %d: rolling did not happen", len(segs), segs, *minSegments)
	}
	if s.ok() {
		rc := verifyLog(ctx, s, lh, acked, *readTimeout, 5*time.Second)
		if s.ok() && rc.read != *entries {
			s.fail("read %d entries, wrote %d", rc.read, *entries)
		}
		if rs := s.fields["read_secs"].(float64); rs > 0 {
			s.set("read_mib_s", round2(float64(rc.read)*float64(*size)/(1<<20)/rs))
		}
	}
	_ = lh.Close(ctx)
	ss.close(ctx, s)
	s.finish()
}

func cmdTail(args []string) {
	s := newSummary("tail")
	c := newFlags("tail")
	logName := c.fs.String("log", "", "log name (must not exist yet)")
	entries := c.fs.Int64("entries", 20000, "entries to write and to tail")
	size := c.fs.Int("payload-bytes", 256, "payload size")
	inflight := c.fs.Int("inflight", 64, "bound on unacknowledged WriteAsync calls")
	from := c.fs.String("from", "earliest", "reader start: earliest or latest (opened before the first write)")
	readTimeout := c.fs.Duration("read-timeout", 2*time.Minute, "bound for each read")
	_ = c.fs.Parse(args)
	if *logName == "" || *entries <= 0 || (*from != "earliest" && *from != "latest") {
		s.fatal("tail needs --log NAME, --entries N > 0 and --from earliest|latest")
	}
	s.set("log", *logName)
	s.set("entries", *entries)
	s.set("from", *from)
	s.set("roll_bytes", c.rollBytes)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ss := c.connect(ctx, s)
	lh := ss.openLog(ctx, s, *logName, true, true)
	start := wplog.EarliestLogMessageID()
	if *from == "latest" {
		start = wplog.LatestLogMessageID()
	}
	r, err := lh.OpenLogReader(ctx, &start, readerName)
	if err != nil {
		s.fatal("opening a reader at %s: %v", *from, err)
	}
	w, _ := openWriter(ctx, s, lh)

	var mu sync.Mutex
	ackedIDs := make([]*wplog.LogMessageId, *entries)
	submitAt := make([]time.Time, *entries)
	st := newWriteStats()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		runWrites(ctx, w, writeOpts{startIndex: 0, count: *entries, payload: *size, inflight: *inflight, ackTimeout: 2 * time.Minute,
			stopOnError: true, onAck: func(ev ackEvent) {
				mu.Lock()
				if ev.err == nil {
					ackedIDs[ev.index] = ev.id
				}
				submitAt[ev.index] = ev.submit
				mu.Unlock()
			}}, st)
	}()

	rc := &readCheck{segments: map[int64]int64{}}
	lags := make([]time.Duration, 0, *entries)
	readIDs := make([]*wplog.LogMessageId, 0, *entries)
	t0 := time.Now()
	stopProgress := progressTicker(5*time.Second, func() {
		mu.Lock()
		defer mu.Unlock()
		progress("tail: read %d/%d", rc.read, *entries)
	})
	for k := int64(0); k < *entries; k++ {
		m, err := readNext(ctx, r, *readTimeout, rc)
		if err != nil {
			s.fail("tail read %d of %d: %v", k, *entries, err)
			break
		}
		now := time.Now()
		if cerr := rc.consume(m); cerr != nil {
			s.fail("%v", cerr)
			break
		}
		if rc.lastIndex != k {
			s.fail("tail read k=%d at position %d (want every entry, in order, from the first)", rc.lastIndex, k)
			break
		}
		readIDs = append(readIDs, m.Id)
		mu.Lock()
		if t := submitAt[k]; !t.IsZero() {
			lags = append(lags, now.Sub(t))
		}
		mu.Unlock()
	}
	stopProgress()
	readSecs := time.Since(t0).Seconds()
	<-writerDone
	// nothing beyond what was written
	if s.ok() {
		if m, err := readNext(ctx, r, 3*time.Second, rc); err == nil {
			s.fail("read an extra entry %s after all %d written ones", idStr(m.Id), *entries)
		}
	}
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	if err := r.Close(cctx); err != nil {
		s.fail("closing the reader: %v", err)
	}
	ccancel()
	closeWriter(ctx, s, w)
	if st.failed > 0 {
		s.fail("%d writes failed; first: %v", st.failed, st.firstErr)
	}
	if st.orderViolations > 0 {
		s.fail("%d acknowledgements out of message-id order", st.orderViolations)
	}
	for k, id := range readIDs {
		if a := ackedIDs[k]; a == nil || a.SegmentId != id.SegmentId || a.EntryId != id.EntryId {
			s.fail("entry k=%d read at %s but acknowledged as %s", k, idStr(id), idStr(a))
			break
		}
	}
	s.set("acked", st.acked)
	s.set("read_entries", len(readIDs))
	s.set("segments", sortedSegments(rc.segments))
	s.set("read_errors_retried", rc.readErrors)
	s.set("read_secs", round2(readSecs))
	s.set("submit_to_read_ms", latencySummary(lags))
	_ = lh.Close(ctx)
	ss.close(ctx, s)
	s.finish()
}

func cmdWrite(args []string) {
	s := newSummary("write")
	c := newFlags("write")
	logName := c.fs.String("log", "", "log name (created if missing)")
	entries := c.fs.Int64("entries", 0, "entries to write (with --until-killed: at most this many, 0 = no limit)")
	untilKilled := c.fs.Bool("until-killed", false, "keep writing until SIGTERM/SIGINT (then drain, close, summarise) or SIGKILL")
	ackedPath := c.fs.String("acked", "", "JSON lines file of acknowledged entries {\"i\",\"seg\",\"entry\"} (fsync'ed every 200 ms)")
	appendAcked := c.fs.Bool("append", false, "append to --acked instead of truncating it")
	startIndex := c.fs.Int64("start-index", 0, "index of the first entry")
	size := c.fs.Int("payload-bytes", 256, "payload size")
	inflight := c.fs.Int("inflight", 64, "bound on unacknowledged WriteAsync calls")
	rate := c.fs.Int("rate", 0, "submit at most this many entries per second (0 = unbounded)")
	reopen := c.fs.Bool("reopen-on-error", true, "after a failed write (other than 1201 segment rolling, which leaves the writer valid), drain, close the writer and open a new one")
	_ = c.fs.Parse(args)
	if *logName == "" || *ackedPath == "" || (!*untilKilled && *entries <= 0) {
		s.fatal("write needs --log NAME, --acked FILE and --entries N > 0 or --until-killed")
	}
	s.set("log", *logName)
	s.set("roll_bytes", c.rollBytes)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-sigs
		progress("write: %v: no new writes; draining the in-flight ones", sig)
		close(stop)
		<-sigs
		progress("write: second signal: exiting at once")
		os.Exit(2)
	}()
	af, err := openAckedFile(*ackedPath, !*appendAcked)
	if err != nil {
		s.fatal("opening %s: %v", *ackedPath, err)
	}
	ss := c.connect(ctx, s)
	lh := ss.openLog(ctx, s, *logName, true, false)
	w, _ := openWriter(ctx, s, lh)

	st := newWriteStats()
	var fileErr error
	var recentFail []string
	rollingRejections := 0
	lastSeg := int64(-1)
	lastAck := time.Now()
	var maxGap time.Duration
	onAck := func(ev ackEvent) {
		if ev.err == nil {
			if g := ev.acked.Sub(lastAck); g > maxGap {
				maxGap = g
			}
			lastAck = ev.acked
		}
		if ev.err != nil {
			if werr.ErrSegmentHandleSegmentRolling.Is(ev.err) {
				rollingRejections++
			}
			if len(recentFail) < 10 {
				recentFail = append(recentFail, fmt.Sprintf("k=%d: %v", ev.index, ev.err))
			}
			return
		}
		if ev.id.SegmentId != lastSeg {
			progress("write: k=%d acknowledged in segment %d (first ack there)", ev.index, ev.id.SegmentId)
			lastSeg = ev.id.SegmentId
		}
		if err := af.add(ackRec{Index: ev.index, Segment: ev.id.SegmentId, Entry: ev.id.EntryId}); err != nil && fileErr == nil {
			fileErr = err
		}
	}
	stopProgress := progressTicker(5*time.Second, func() {
		progress("write: %d acknowledged, %d failed, segments %v", st.acked, st.failed, sortedSegments(st.segments))
	})
	var limiter chan struct{}
	if *rate > 0 {
		// pace submissions with a ticker-fed token channel
		limiter = make(chan struct{})
		tick := time.NewTicker(time.Second / time.Duration(*rate))
		go func() {
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					select {
					case limiter <- struct{}{}:
					case <-stop:
						return
					}
				case <-stop:
					return
				}
			}
		}()
	}
	reopens := 0
	next := *startIndex
	remaining := *entries
	for {
		failedBefore := st.failed
		o := writeOpts{startIndex: next, count: remaining, payload: *size, inflight: *inflight, ackTimeout: 2 * time.Minute,
			stopOnError: *reopen, stopOn: needsReopen, stop: stop, onAck: onAck, keepLatency: true}
		var ww wplog.LogWriter = w
		if limiter != nil {
			ww = &pacedWriter{LogWriter: w, tokens: limiter, stop: stop}
		}
		runWrites(ctx, ww, o, st)
		if remaining > 0 {
			remaining -= st.nextIndex - next
		}
		next = st.nextIndex
		stopped := false
		select {
		case <-stop:
			stopped = true
		default:
		}
		if !stopped && st.failed > failedBefore && st.lastErr != nil && needsReopen(st.lastErr) && *reopen && (remaining > 0 || *entries <= 0) && ctx.Err() == nil {
			progress("write: writes failed (%v); closing the writer and opening a new one", st.firstErr)
			cctx, ccancel := context.WithTimeout(ctx, time.Minute)
			_ = w.Close(cctx)
			ccancel()
			w, _ = openWriter(ctx, s, lh)
			reopens++
			continue
		}
		break
	}
	stopProgress()
	closeWriter(ctx, s, w)
	if err := af.close(); err != nil && fileErr == nil {
		fileErr = err
	}
	if fileErr != nil {
		s.fail("writing %s: %v", *ackedPath, fileErr)
	}
	secs := st.end.Sub(st.start).Seconds()
	s.set("acked", st.acked)
	s.set("failed", st.failed)
	s.set("failed_segment_rolling", rollingRejections)
	s.set("reopens", reopens)
	s.set("next_index", next)
	s.set("segments", sortedSegments(st.segments))
	s.set("secs", round2(secs))
	s.set("entries_s", math.Round(float64(st.acked)/secs))
	s.set("append_latency_ms", latencySummary(st.latencies))
	s.set("max_ack_gap_ms", maxGap.Milliseconds())
	if len(recentFail) > 0 {
		s.set("failed_examples", recentFail)
	}
	if st.orderViolations > 0 {
		s.fail("%d acknowledgements out of message-id order", st.orderViolations)
	}
	if !*untilKilled && st.acked+st.failed != *entries {
		s.fail("processed %d of %d entries", st.acked+st.failed, *entries)
	}
	_ = lh.Close(ctx)
	ss.close(ctx, s)
	s.finish()
}

// needsReopen: after which failed write `write --reopen-on-error` replaces the writer. Upstream answers an
// append that races a segment roll with ErrSegmentHandleSegmentRolling (1201, retryable, "retry later"); the
// writer stays valid, so the entry is just left unacknowledged and writing goes on.
func needsReopen(err error) bool { return !werr.ErrSegmentHandleSegmentRolling.Is(err) }

// pacedWriter delays each WriteAsync until a token arrives (write --rate).
type pacedWriter struct {
	wplog.LogWriter
	tokens <-chan struct{}
	stop   <-chan struct{}
}

func (p *pacedWriter) WriteAsync(ctx context.Context, m *wplog.WriteMessage) <-chan *wplog.WriteResult {
	select {
	case <-p.tokens:
	case <-p.stop:
	case <-ctx.Done():
	}
	return p.LogWriter.WriteAsync(ctx, m)
}

func cmdVerify(args []string) {
	s := newSummary("verify")
	c := newFlags("verify")
	logName := c.fs.String("log", "", "log name")
	ackedPath := c.fs.String("acked", "", "acked file written by `write`/`recover`")
	readTimeout := c.fs.Duration("read-timeout", 2*time.Minute, "bound for each read until all acknowledged entries were seen")
	idle := c.fs.Duration("idle", 5*time.Second, "after the last acknowledged entry, stop when nothing arrives for this long")
	_ = c.fs.Parse(args)
	if *logName == "" || *ackedPath == "" {
		s.fatal("verify needs --log NAME and --acked FILE")
	}
	s.set("log", *logName)
	expect, err := readAcked(*ackedPath)
	if err != nil {
		s.fatal("reading %s: %v", *ackedPath, err)
	}
	s.set("acked", len(expect))
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ss := c.connect(ctx, s)
	lh := ss.openLog(ctx, s, *logName, false, false)
	verifyLog(ctx, s, lh, expect, *readTimeout, *idle)
	_ = lh.Close(ctx)
	ss.close(ctx, s)
	s.finish()
}

func cmdRecover(args []string) {
	s := newSummary("recover")
	c := newFlags("recover")
	logName := c.fs.String("log", "", "existing log name")
	ackedPath := c.fs.String("acked", "", "acked file of the previous writer(s); the new acknowledgements are appended")
	entries := c.fs.Int64("entries", 100, "entries the new writer appends")
	size := c.fs.Int("payload-bytes", 256, "payload size")
	readTimeout := c.fs.Duration("read-timeout", 2*time.Minute, "bound for each read until all acknowledged entries were seen")
	idle := c.fs.Duration("idle", 5*time.Second, "after the last acknowledged entry, stop when nothing arrives for this long")
	_ = c.fs.Parse(args)
	if *logName == "" || *ackedPath == "" || *entries <= 0 {
		s.fatal("recover needs --log NAME, --acked FILE and --entries N > 0")
	}
	s.set("log", *logName)
	prev, err := readAcked(*ackedPath)
	if err != nil {
		s.fatal("reading %s: %v", *ackedPath, err)
	}
	start := int64(recoverIndexGap)
	if len(prev) > 0 {
		start = prev[len(prev)-1].Index + recoverIndexGap
	}
	s.set("acked_before", len(prev))
	s.set("start_index", start)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ss := c.connect(ctx, s)
	lh := ss.openLog(ctx, s, *logName, false, false)
	before, err := lh.GetSegments(ctx)
	if err != nil {
		s.fatal("listing segments of %q: %v", *logName, err)
	}
	s.set("segment_states_before", segmentStates(before))
	w, openDur := openWriter(ctx, s, lh) // fences and completes the Active segments of the old writer
	s.set("writer_open_ms", openDur.Milliseconds())
	after, err := lh.GetSegments(ctx)
	if err == nil {
		s.set("segment_states_after_open", segmentStates(after))
	}
	af, err := openAckedFile(*ackedPath, false)
	if err != nil {
		s.fatal("opening %s: %v", *ackedPath, err)
	}
	var newAcked []ackRec
	st := newWriteStats()
	runWrites(ctx, w, writeOpts{startIndex: start, count: *entries, payload: *size, inflight: 64, ackTimeout: 2 * time.Minute,
		stopOnError: true, onAck: func(ev ackEvent) {
			if ev.err == nil {
				r := ackRec{Index: ev.index, Segment: ev.id.SegmentId, Entry: ev.id.EntryId}
				newAcked = append(newAcked, r)
				_ = af.add(r)
			}
		}}, st)
	closeWriter(ctx, s, w)
	if err := af.close(); err != nil {
		s.fail("writing %s: %v", *ackedPath, err)
	}
	s.set("new_acked", st.acked)
	s.set("new_segments", sortedSegments(st.segments))
	if st.failed > 0 {
		s.fail("%d writes of the new writer failed; first: %v", st.failed, st.firstErr)
	}
	for seg := range st.segments {
		if m, ok := before[seg]; ok {
			s.fail("the new writer acknowledged entries in segment %d, which existed before (state %v)", seg, m.Metadata.State)
		}
	}
	verifyLog(ctx, s, lh, append(append([]ackRec(nil), prev...), newAcked...), *readTimeout, *idle)
	_ = lh.Close(ctx)
	ss.close(ctx, s)
	s.finish()
}

func segmentStates(m map[int64]*meta.SegmentMeta) map[string]string {
	out := map[string]string{}
	for id, sm := range m {
		out[strconv.FormatInt(id, 10)] = sm.Metadata.State.String()
	}
	return out
}

func cmdBench(args []string) {
	s := newSummary("bench")
	c := newFlags("bench")
	logName := c.fs.String("log", "", "log name (default bench-<payload>-<unix nanos>)")
	entries := c.fs.Int64("entries", 0, "stop after this many entries (0 = only --duration)")
	size := c.fs.Int("payload-bytes", 1024, "payload size")
	duration := c.fs.Duration("duration", 30*time.Second, "stop submitting after this long")
	inflight := c.fs.Int("inflight", 256, "bound on unacknowledged WriteAsync calls")
	_ = c.fs.Parse(args)
	if *entries <= 0 && *duration <= 0 {
		s.fatal("bench needs --entries N or --duration D")
	}
	if *logName == "" {
		*logName = fmt.Sprintf("bench-%d-%d", *size, time.Now().UnixNano())
	}
	if !c.isSet("roll-bytes") {
		c.rollBytes = 256_000_000 // upstream's default: benchmark steady-state appends, not rolling
	}
	s.set("log", *logName)
	s.set("payload_bytes", *size)
	s.set("inflight", *inflight)
	s.set("roll_bytes", c.rollBytes)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ss := c.connect(ctx, s)
	lh := ss.openLog(ctx, s, *logName, true, true)
	w, _ := openWriter(ctx, s, lh)
	// the first append selects a quorum and creates the segment: keep that out of the measurement
	if r := w.Write(ctx, &wplog.WriteMessage{Payload: payloadFor(-1, *size), Properties: propertiesFor(-1)}); r.Err != nil {
		s.fatal("warm-up write: %v", r.Err)
	}
	o := writeOpts{startIndex: 0, count: *entries, payload: *size, inflight: *inflight, ackTimeout: 2 * time.Minute, keepLatency: true, stopOnError: true}
	if *duration > 0 {
		o.deadline = time.Now().Add(*duration)
	}
	st := newWriteStats()
	stopProgress := progressTicker(5*time.Second, func() {
		progress("bench: %d acknowledged", st.acked)
	})
	runWrites(ctx, w, o, st)
	stopProgress()
	closeWriter(ctx, s, w)
	secs := st.end.Sub(st.start).Seconds()
	s.set("entries", st.acked)
	s.set("bytes", st.bytes)
	s.set("secs", round2(secs))
	s.set("mib_s", round2(float64(st.bytes)/(1<<20)/secs))
	s.set("entries_s", math.Round(float64(st.acked)/secs))
	s.set("append_latency_ms", latencySummary(st.latencies))
	s.set("segments", sortedSegments(st.segments))
	if st.failed > 0 {
		s.fail("%d writes failed; first: %v", st.failed, st.firstErr)
	}
	if st.orderViolations > 0 {
		s.fail("%d acknowledgements out of message-id order", st.orderViolations)
	}
	_ = lh.Close(ctx)
	ss.close(ctx, s)
	s.finish()
}

func cmdSegments(args []string) {
	s := newSummary("segments")
	c := newFlags("segments")
	logName := c.fs.String("log", "", "log name")
	_ = c.fs.Parse(args)
	if *logName == "" {
		s.fatal("segments needs --log NAME")
	}
	s.set("log", *logName)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ss := c.connect(ctx, s)
	lh := ss.openLog(ctx, s, *logName, false, false)
	m, err := lh.GetSegments(ctx)
	if err != nil {
		s.fatal("listing segments: %v", err)
	}
	type segOut struct {
		Segment     int64    `json:"seg"`
		State       string   `json:"state"`
		LastEntryID int64    `json:"last_entry_id"`
		Size        int64    `json:"size"`
		Nodes       []string `json:"nodes"`
	}
	var out []segOut
	for id, sm := range m {
		o := segOut{Segment: id, State: sm.Metadata.State.String(), LastEntryID: sm.Metadata.LastEntryId, Size: sm.Metadata.Size}
		if q := sm.Metadata.Quorum; q != nil {
			o.Nodes = q.Nodes
		}
		out = append(out, o)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Segment < out[b].Segment })
	s.set("log_id", lh.GetId())
	s.set("segments", out)
	_ = lh.Close(ctx)
	ss.close(ctx, s)
	s.finish()
}

func cmdRenderConfig(args []string) {
	s := newSummary("render-config")
	c := newFlags("render-config")
	out := c.fs.String("out", "", "write the rendered client woodpecker.yaml here")
	_ = c.fs.Parse(args)
	if *out == "" {
		s.fatal("render-config needs --out FILE")
	}
	text, err := c.renderConfig()
	if err != nil {
		s.fatal("%v", err)
	}
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		s.fatal("%v", err)
	}
	if _, err := config.NewConfiguration(*out); err != nil {
		s.fatal("the rendered config does not load: %v", err)
	}
	s.set("out", *out)
	s.finish()
}

// cmdReadForeign reads a log another client wrote (our Rust client's `woodpecker log write`): exactly
// --entries entries from earliest, entry i's payload starting with --payload-prefix + i (then padding or
// the end), message ids strictly increasing, then nothing more for --idle.
func cmdReadForeign(args []string) {
	s := newSummary("read-foreign")
	c := newFlags("read-foreign")
	logName := c.fs.String("log", "", "log name")
	entries := c.fs.Int64("entries", 0, "entries the other client acknowledged")
	prefix := c.fs.String("payload-prefix", "entry-", "entry i's payload starts with this and then i")
	idle := c.fs.Duration("idle", 3*time.Second, "after the last entry, nothing more may arrive for this long")
	_ = c.fs.Parse(args)
	if *logName == "" || *entries <= 0 {
		s.fatal("read-foreign needs --log NAME and --entries N")
	}
	s.set("log", *logName)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ss := c.connect(ctx, s)
	lh := ss.openLog(ctx, s, *logName, false, false)
	from := wplog.EarliestLogMessageID()
	r, err := lh.OpenLogReader(ctx, &from, readerName)
	if err != nil {
		s.fatal("opening a reader on %q: %v", *logName, err)
	}
	rc := &readCheck{segments: map[int64]int64{}}
	var read int64
	var last *wplog.LogMessageId
	for {
		bound := 2 * time.Minute
		if read >= *entries {
			bound = *idle
		}
		m, err := readNext(ctx, r, bound, rc)
		if err != nil {
			if read >= *entries && errors.Is(err, context.DeadlineExceeded) {
				break
			}
			s.fail("after %d of %d entries: %v", read, *entries, err)
			break
		}
		if read >= *entries {
			s.fail("an entry past the %d written: %s (%d bytes)", *entries, idStr(m.Id), len(m.Payload))
			break
		}
		want := *prefix + strconv.FormatInt(read, 10)
		p := string(m.Payload)
		if !strings.HasPrefix(p, want) || (len(p) > len(want) && p[len(want)] >= '0' && p[len(want)] <= '9') {
			n := min(len(p), 40)
			s.fail("entry %d at %s: payload starts %q, want %q", read, idStr(m.Id), p[:n], want)
			break
		}
		if last != nil && !idLess(last, m.Id) {
			s.fail("message id %s not after %s", idStr(m.Id), idStr(last))
			break
		}
		last = m.Id
		rc.segments[m.Id.SegmentId]++
		read++
	}
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	defer ccancel()
	if err := r.Close(cctx); err != nil {
		s.fail("closing the reader: %v", err)
	}
	s.set("read_entries", read)
	s.set("read_segments", sortedSegments(rc.segments))
	_ = lh.Close(ctx)
	ss.close(ctx, s)
	s.finish()
}

func main() {
	cmds := map[string]func([]string){
		"write-read": cmdWriteRead, "tail": cmdTail, "write": cmdWrite, "verify": cmdVerify,
		"recover": cmdRecover, "bench": cmdBench, "segments": cmdSegments, "render-config": cmdRenderConfig,
		"case": cmdCase, "read-foreign": cmdReadForeign,
	}
	if len(os.Args) < 2 || cmds[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: wp-service {write-read|tail|write|verify|recover|bench|segments|render-config|case|read-foreign} [flags]  (-h per subcommand)")
		os.Exit(2)
	}
	cmds[os.Args[1]](os.Args[2:])
}
