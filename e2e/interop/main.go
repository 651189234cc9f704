// wp-interop: drives upstream Woodpecker (github.com/zilliztech/woodpecker, used as a
// black-box library in embedded mode, minio storage) against a real etcd + MinIO, so
// that logs written by upstream can be read by the Rust implementation and vice versa.
//
//	wp-interop write --config <yaml> --log <name> --count N [--start I] [--payload-size B] [--window W] [--shapes] [--crash] [--hold D] [--dump-before-close DIR]
//	wp-interop read  --config <yaml> --log <name> --count N [--start I] [--from-segment S --from-entry E] [--verify] [--dump-before-close DIR]
//	wp-interop dump  --config <yaml> --out <dir>
//
// write/read print one JSON line per entry on stdout:
//
//	{"segment":S,"entry":E,"payload_b64":"...","properties":{"idx":"<i>","src":"go"}}
//
// Upstream's logger always writes to stdout; it is redirected to stderr here so that
// stdout carries only the JSON lines.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/protobuf/encoding/protojson"
	gproto "google.golang.org/protobuf/proto"

	"github.com/zilliztech/woodpecker/common/config"
	"github.com/zilliztech/woodpecker/common/logger"
	"github.com/zilliztech/woodpecker/common/werr"
	wpproto "github.com/zilliztech/woodpecker/proto"
	"github.com/zilliztech/woodpecker/woodpecker"
	wplog "github.com/zilliztech/woodpecker/woodpecker/log"
)

type entryLine struct {
	Segment    int64             `json:"segment"`
	Entry      int64             `json:"entry"`
	PayloadB64 string            `json:"payload_b64"`
	Properties map[string]string `json:"properties"`
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "wp-interop: error: "+format+"\n", args...)
	os.Exit(1)
}

// payloadFor returns the deterministic payload of the i-th entry (0-based, counted
// across the whole run): "entry-<i>", padded to size bytes (if size is larger) with
// the repeating lowercase pattern byte('a' + (i+j) % 26) for padding byte j.
func payloadFor(i int, size int) []byte {
	p := []byte(fmt.Sprintf("entry-%d", i))
	for j := 0; len(p) < size; j++ {
		p = append(p, byte('a'+(i+j)%26))
	}
	return p
}

func propertiesFor(i int) map[string]string {
	return map[string]string{"idx": strconv.Itoa(i), "src": "go"}
}

// shapeMessages are edge cases of the stored LogMessageLayout: no properties, empty payload,
// every byte value, non-ASCII and empty property strings, an empty (non-nil) map.
func shapeMessages() []wplog.WriteMessage {
	all := make([]byte, 256)
	for b := range all {
		all[b] = byte(b)
	}
	return []wplog.WriteMessage{
		{Payload: []byte("payload-only")},
		{Properties: map[string]string{"only": "properties"}},
		{Payload: all, Properties: map[string]string{"k": "v"}},
		{Payload: []byte("unicode"), Properties: map[string]string{"ключ": "値", "empty": ""}},
		{Payload: []byte("x"), Properties: map[string]string{}},
	}
}

func messageFor(i int, size int, shapes bool) ([]byte, map[string]string) {
	if shapes {
		m := shapeMessages()[i]
		return m.Payload, m.Properties
	}
	return payloadFor(i, size), propertiesFor(i)
}

func redirectUpstreamLogger(level string) {
	lvl := zapcore.WarnLevel
	if level != "" {
		_ = lvl.Set(level)
	}
	cfg := zap.NewDevelopmentConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.DisableStacktrace = true
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	l, err := cfg.Build()
	if err != nil {
		die("building logger: %v", err)
	}
	logger.ReplaceGlobals(l)
}

func loadConfig(p string) *config.Configuration {
	if p == "" {
		die("--config is required")
	}
	if _, err := os.Stat(p); err != nil {
		die("config file: %v", err)
	}
	cfg, err := config.NewConfiguration(p)
	if err != nil {
		die("loading config %s: %v", p, err)
	}
	if !cfg.Woodpecker.Storage.IsStorageMinio() {
		die("config %s: woodpecker.storage.type must be minio (got %q)", p, cfg.Woodpecker.Storage.Type)
	}
	redirectUpstreamLogger(cfg.Log.Level)
	return cfg
}

func newClient(ctx context.Context, cfg *config.Configuration) woodpecker.Client {
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := woodpecker.NewEmbedClientFromConfig(cctx, cfg)
	if err != nil {
		die("creating embedded client (etcd %v, minio %s:%d): %v", cfg.Etcd.Endpoints, cfg.Minio.Address, cfg.Minio.Port, err)
	}
	return c
}

func closeClient(ctx context.Context, c woodpecker.Client) {
	if err := c.Close(ctx); err != nil {
		die("closing client: %v", err)
	}
	if err := woodpecker.StopEmbedLogStore(); err != nil {
		die("stopping embedded logstore: %v", err)
	}
}

func emit(enc *json.Encoder, id *wplog.LogMessageId, payload []byte, props map[string]string) {
	if props == nil {
		props = map[string]string{}
	}
	if err := enc.Encode(entryLine{Segment: id.SegmentId, Entry: id.EntryId,
		PayloadB64: base64.StdEncoding.EncodeToString(payload), Properties: props}); err != nil {
		die("writing stdout: %v", err)
	}
}

func cmdWrite(args []string) {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	cfgPath := fs.String("config", "", "woodpecker.yaml")
	logName := fs.String("log", "", "log name (created if missing)")
	count := fs.Int("count", 0, "number of entries to write")
	start := fs.Int("start", 0, "index of the first entry (payload/idx numbering)")
	size := fs.Int("payload-size", 0, "pad payloads to this many bytes")
	window := fs.Int("window", 100, "entries in flight (WriteAsync) before waiting for their acks")
	timeout := fs.Duration("timeout", 5*time.Minute, "overall timeout")
	crash := fs.Bool("crash", false, "after the last ack exit(0) at once: no writer/client close (simulates a crashed writer)")
	hold := fs.Duration("hold", 0, "keep the writer open this long after the last ack (lets the auditor run)")
	dumpDir := fs.String("dump-before-close", "", "dump etcd+objects into this dir while the writer is still open")
	shapes := fs.Bool("shapes", false, "write the fixed edge-case entries of shapeMessages() instead of --count generated ones")
	_ = fs.Parse(args)
	if *shapes {
		*count, *start = len(shapeMessages()), 0
	}
	if *logName == "" || *count <= 0 || *window <= 0 {
		die("write needs --log NAME, --count N > 0 (and --window > 0)")
	}
	cfg := loadConfig(*cfgPath)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c := newClient(ctx, cfg)

	if err := c.CreateLog(ctx, *logName); err != nil && !errors.Is(err, werr.ErrMetadataCreateLogAlreadyExists) {
		die("creating log %q: %v", *logName, err)
	}
	lh, err := c.OpenLog(ctx, *logName)
	if err != nil {
		die("opening log %q: %v", *logName, err)
	}
	w, err := lh.OpenLogWriter(ctx)
	if err != nil {
		die("opening writer on %q: %v", *logName, err)
	}
	enc := json.NewEncoder(os.Stdout)
	for base := 0; base < *count; base += *window {
		n := min(*window, *count-base)
		chans := make([]<-chan *wplog.WriteResult, n)
		for k := 0; k < n; k++ {
			i := *start + base + k
			payload, props := messageFor(i, *size, *shapes)
			chans[k] = w.WriteAsync(ctx, &wplog.WriteMessage{Payload: payload, Properties: props})
		}
		for k := 0; k < n; k++ {
			i := *start + base + k
			var r *wplog.WriteResult
			select {
			case r = <-chans[k]:
			case <-ctx.Done():
				die("entry %d: no ack before timeout: %v", i, ctx.Err())
			}
			if r == nil {
				die("entry %d: result channel closed without a result", i)
			}
			if r.Err != nil {
				die("entry %d: write failed: %v", i, r.Err)
			}
			payload, props := messageFor(i, *size, *shapes)
			emit(enc, r.LogMessageId, payload, props)
		}
	}
	if *hold > 0 {
		time.Sleep(*hold)
	}
	if *dumpDir != "" {
		dumpAll(ctx, cfg, *dumpDir, "")
	}
	if *crash {
		os.Exit(0)
	}
	if err := w.Close(ctx); err != nil {
		die("closing writer: %v", err)
	}
	if err := lh.Close(ctx); err != nil {
		die("closing log handle: %v", err)
	}
	closeClient(ctx, c)
}

func cmdRead(args []string) {
	fs := flag.NewFlagSet("read", flag.ExitOnError)
	cfgPath := fs.String("config", "", "woodpecker.yaml")
	logName := fs.String("log", "", "log name")
	count := fs.Int("count", 0, "number of entries to read")
	start := fs.Int("start", 0, "with --verify: index of the first expected entry")
	segID := fs.Int64("from-segment", 0, "start position: segment id (default Earliest)")
	entryID := fs.Int64("from-entry", 0, "start position: entry id (default Earliest)")
	verify := fs.Bool("verify", false, "check payload/properties against the deterministic write scheme")
	dumpDir := fs.String("dump-before-close", "", "dump etcd+objects into this dir while the reader is still open")
	timeout := fs.Duration("timeout", 2*time.Minute, "overall timeout")
	_ = fs.Parse(args)
	if *logName == "" || *count <= 0 {
		die("read needs --log NAME and --count N > 0")
	}
	cfg := loadConfig(*cfgPath)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c := newClient(ctx, cfg)
	lh, err := c.OpenLog(ctx, *logName)
	if err != nil {
		die("opening log %q: %v", *logName, err)
	}
	from := &wplog.LogMessageId{SegmentId: *segID, EntryId: *entryID}
	r, err := lh.OpenLogReader(ctx, from, "interop")
	if err != nil {
		die("opening reader on %q: %v", *logName, err)
	}
	enc := json.NewEncoder(os.Stdout)
	for k := 0; k < *count; k++ {
		m, err := r.ReadNext(ctx)
		if err != nil {
			die("reading entry %d of %d from %q: %v", k, *count, *logName, err)
		}
		if *verify {
			i := *start + k
			want := payloadFor(i, len(m.Payload))
			if !bytes.Equal(m.Payload, want) || m.Properties["idx"] != strconv.Itoa(i) || m.Properties["src"] == "" {
				die("entry %d at %d/%d: unexpected content payload=%q properties=%v", i, m.Id.SegmentId, m.Id.EntryId, m.Payload, m.Properties)
			}
		}
		emit(enc, m.Id, m.Payload, m.Properties)
	}
	if *dumpDir != "" {
		dumpAll(ctx, cfg, *dumpDir, "")
	}
	if err := r.Close(ctx); err != nil {
		die("closing reader: %v", err)
	}
	if err := lh.Close(ctx); err != nil {
		die("closing log handle: %v", err)
	}
	closeClient(ctx, c)
}

// metaPrefix mirrors upstream's prefix selection (spec §2.1) for the non-legacy case.
func metaPrefix(cfg *config.Configuration) string {
	p := path.Join(cfg.Etcd.RootPath, cfg.Woodpecker.Meta.Prefix)
	if p == "" || p == "." {
		return "woodpecker"
	}
	return p
}

// decodeMeta returns a protojson rendering for the known protobuf values, by key shape.
func decodeMeta(rel string, val []byte) (string, []byte) {
	parts := strings.Split(rel, "/")
	var m gproto.Message
	var kind string
	switch {
	case rel == "version":
		m, kind = &wpproto.Version{}, "Version"
	case len(parts) == 2 && parts[0] == "logs":
		m, kind = &wpproto.LogMeta{}, "LogMeta"
	case len(parts) == 4 && parts[0] == "logs" && parts[2] == "segments":
		m, kind = &wpproto.SegmentMetadata{}, "SegmentMetadata"
	case len(parts) == 3 && parts[0] == "readers":
		m, kind = &wpproto.ReaderTempInfo{}, "ReaderTempInfo"
	default:
		return "", nil
	}
	if err := gproto.Unmarshal(val, m); err != nil {
		return kind, []byte(fmt.Sprintf("{\"decode_error\": %q}\n", err.Error()))
	}
	out, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		return kind, nil
	}
	return kind, append(out, '\n')
}

func cmdDump(args []string) {
	fs := flag.NewFlagSet("dump", flag.ExitOnError)
	cfgPath := fs.String("config", "", "woodpecker.yaml")
	out := fs.String("out", "", "output directory (created)")
	prefixFlag := fs.String("etcd-prefix", "", "etcd prefix to dump (default: etcd.rootPath/woodpecker.meta.prefix)")
	timeout := fs.Duration("timeout", time.Minute, "overall timeout")
	_ = fs.Parse(args)
	if *out == "" {
		die("dump needs --out DIR")
	}
	cfg := loadConfig(*cfgPath)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	dumpAll(ctx, cfg, *out, *prefixFlag)
}

// dumpAll writes every etcd key under prefix/ and every object under minio.rootPath/ into out.
func dumpAll(ctx context.Context, cfg *config.Configuration, out string, prefix string) {
	if prefix == "" {
		prefix = metaPrefix(cfg)
	}
	etcdDir := filepath.Join(out, "etcd")
	objDir := filepath.Join(out, "objects")
	for _, d := range []string{etcdDir, objDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			die("%v", err)
		}
	}

	// etcd: every key under prefix/, raw value as <key with / -> __>.bin, protojson beside it.
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Etcd.Endpoints, DialTimeout: 10 * time.Second})
	if err != nil {
		die("etcd client: %v", err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		die("etcd get %s/: %v", prefix, err)
	}
	var keyList strings.Builder
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		rel := strings.TrimPrefix(key, prefix+"/")
		kind, decoded := decodeMeta(rel, kv.Value)
		if kind == "" {
			kind = "text"
		}
		fmt.Fprintf(&keyList, "%s\t%s\t%d bytes\tlease=%x\n", key, kind, len(kv.Value), kv.Lease)
		base := filepath.Join(etcdDir, strings.ReplaceAll(key, "/", "__"))
		if err := os.WriteFile(base+".bin", kv.Value, 0o644); err != nil {
			die("%v", err)
		}
		if decoded != nil {
			if err := os.WriteFile(base+".json", decoded, 0o644); err != nil {
				die("%v", err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(out, "etcd-keys.txt"), []byte(keyList.String()), 0o644); err != nil {
		die("%v", err)
	}

	// MinIO: every object under minio.rootPath/ in the bucket, raw bytes under objects/<key>.
	endpoint := fmt.Sprintf("%s:%d", cfg.Minio.Address, cfg.Minio.Port)
	mc, err := minio.New(endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.Minio.AccessKeyID, cfg.Minio.SecretAccessKey, ""),
		Secure: cfg.Minio.UseSSL,
	})
	if err != nil {
		die("minio client: %v", err)
	}
	objPrefix := strings.TrimSuffix(cfg.Minio.RootPath, "/")
	if objPrefix != "" {
		objPrefix += "/"
	}
	var objs []minio.ObjectInfo
	for oi := range mc.ListObjects(ctx, cfg.Minio.BucketName, minio.ListObjectsOptions{Prefix: objPrefix, Recursive: true, WithMetadata: true}) {
		if oi.Err != nil {
			die("listing s3://%s/%s: %v", cfg.Minio.BucketName, objPrefix, oi.Err)
		}
		objs = append(objs, oi)
	}
	sort.Slice(objs, func(a, b int) bool { return objs[a].Key < objs[b].Key })
	var objList strings.Builder
	for _, oi := range objs {
		o, err := mc.GetObject(ctx, cfg.Minio.BucketName, oi.Key, minio.GetObjectOptions{})
		if err != nil {
			die("get %s: %v", oi.Key, err)
		}
		data, err := io.ReadAll(o)
		o.Close()
		if err != nil {
			die("read %s: %v", oi.Key, err)
		}
		st, err := mc.StatObject(ctx, cfg.Minio.BucketName, oi.Key, minio.StatObjectOptions{})
		if err != nil {
			die("stat %s: %v", oi.Key, err)
		}
		var meta []string
		for k, v := range st.UserMetadata {
			meta = append(meta, k+"="+v)
		}
		sort.Strings(meta)
		fmt.Fprintf(&objList, "%s\t%d bytes\tmeta=[%s]\n", oi.Key, len(data), strings.Join(meta, ","))
		dst := filepath.Join(objDir, filepath.FromSlash(oi.Key))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			die("%v", err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			die("%v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(out, "objects.txt"), []byte(objList.String()), 0o644); err != nil {
		die("%v", err)
	}
	fmt.Fprintf(os.Stderr, "wp-interop: dumped %d etcd keys under %s/ and %d objects under s3://%s/%s into %s\n",
		len(resp.Kvs), prefix, len(objs), cfg.Minio.BucketName, objPrefix, out)
}

func main() {
	if len(os.Args) < 2 {
		die("usage: wp-interop {write|read|dump} --config <yaml> ...")
	}
	switch os.Args[1] {
	case "write":
		cmdWrite(os.Args[2:])
	case "read":
		cmdRead(os.Args[2:])
	case "dump":
		cmdDump(os.Args[2:])
	default:
		die("unknown subcommand %q (want write|read|dump)", os.Args[1])
	}
}
