// franz-peer: franz-go (github.com/twmb/franz-go/pkg/kgo) as a benchmark
// peer of `cargo xtask bench`, one measurement per process, mirroring
// bench/src/main.rs and bench/src/latency.rs role for role:
//
//	franz-peer <role> <bootstrap> <topic> <count> [size=<bytes>] [rate=<records/s>]
//	           [<kafka.property>=<value> ...] [producer.<kafka.property>=<value> ...]
//
// Roles:
//
//   - franz-consume: direct consumption of every partition of the topic
//     from the start offset, no group (so there is no join to exclude);
//     stops after exactly `count` records. The clock runs from the first
//     record received to the last, as for the Rust peers.
//   - franz-produce: `count` keyless records of `size` bytes of 'x', async
//     Produce with a promise; the clock runs from the first send to the
//     last acknowledgement.
//   - franz-latency: workload 5, as bench/src/latency.rs: a fixed rate,
//     each value stamped with its sequence number and scheduled send time,
//     latency from that time to the consumer's receipt, one second of
//     warm-up excluded.
//
// Property names are Kafka's (Java's); each maps onto a kgo option and an
// unknown one is an error (exit 2), so a knob the other peers get is never
// silently dropped here. The last stdout line is
// `RESULT records=<n> bytes=<n> secs=<f>`; franz-latency prints
// `LATENCY records= p50_us= p99_us= max_us= ack_p50_us= ack_p99_us=` first.
// The effective settings go to stderr.
package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type args struct {
	role, bootstrap, topic string
	count                  int64
	size                   int
	// Records per second (rate=, latency runs).
	rate int64
	// The consumer's properties (or the producer's in a throughput run).
	props [][2]string
	// producer.<property>=: the producer of a latency run.
	producerProps [][2]string
}

func usage(what string) {
	fmt.Fprintf(os.Stderr, "franz-peer: missing or bad %s\nusage: franz-peer <role> <bootstrap> <topic> <count> [size=N] [rate=N] [kafka.property=value ...]\n", what)
	os.Exit(2)
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "franz-peer: "+format+"\n", a...)
	os.Exit(1)
}

func parseArgs() args {
	if len(os.Args) < 5 {
		usage("arguments")
	}
	a := args{role: os.Args[1], bootstrap: os.Args[2], topic: os.Args[3], size: 100, rate: 10_000}
	var err error
	if a.count, err = strconv.ParseInt(os.Args[4], 10, 64); err != nil {
		usage("count")
	}
	for _, kv := range os.Args[5:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			usage("key=value (" + kv + ")")
		}
		switch {
		case k == "size":
			if a.size, err = strconv.Atoi(v); err != nil {
				usage("size")
			}
		case k == "rate":
			if a.rate, err = strconv.ParseInt(v, 10, 64); err != nil || a.rate <= 0 {
				usage("rate")
			}
		case strings.HasPrefix(k, "producer."):
			a.producerProps = append(a.producerProps, [2]string{strings.TrimPrefix(k, "producer."), v})
		default:
			a.props = append(a.props, [2]string{k, v})
		}
	}
	return a
}

func report(records, bytes int64, took time.Duration) {
	fmt.Printf("RESULT records=%d bytes=%d secs=%.6f\n", records, bytes, took.Seconds())
}

func main() {
	a := parseArgs()
	switch a.role {
	case "franz-consume":
		consume(a)
	case "franz-produce":
		produce(a)
	case "franz-latency":
		latency(a)
	default:
		usage("role (" + a.role + ")")
	}
}

func number(k, v string) int32 {
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "franz-peer: %s=%s: not a non-negative 32-bit number\n", k, v)
		os.Exit(2)
	}
	return int32(n)
}

func boolean(k, v string) bool {
	b, err := strconv.ParseBool(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "franz-peer: %s=%s: not true or false\n", k, v)
		os.Exit(2)
	}
	return b
}

func unknown(what, k, v string) {
	fmt.Fprintf(os.Stderr, "franz-peer: unknown %s property %s=%s (map it onto a kgo option in bench/franz/main.go)\n", what, k, v)
	os.Exit(2)
}

// consumerOpts maps the consumer knobs every peer gets onto kgo.
func consumerOpts(props [][2]string) []kgo.Opt {
	var opts []kgo.Opt
	var shown []string
	for _, kv := range props {
		k, v := kv[0], kv[1]
		switch k {
		case "fetch.min.bytes":
			opts = append(opts, kgo.FetchMinBytes(number(k, v)))
		case "fetch.max.bytes":
			opts = append(opts, kgo.FetchMaxBytes(number(k, v)))
		case "max.partition.fetch.bytes":
			opts = append(opts, kgo.FetchMaxPartitionBytes(number(k, v)))
		case "fetch.max.wait.ms":
			opts = append(opts, kgo.FetchMaxWait(time.Duration(number(k, v))*time.Millisecond))
		case "check.crcs":
			// kgo validates every record batch's CRC32C by default (there
			// is no opt-in); it can only be switched off, with
			// DisableFetchCRCValidation. true is therefore the default.
			if !boolean(k, v) {
				opts = append(opts, kgo.DisableFetchCRCValidation())
			}
		default:
			unknown("consumer", k, v)
		}
		shown = append(shown, k+"="+v)
	}
	fmt.Fprintf(os.Stderr, "franz-peer consumer: %s\n", strings.Join(shown, " "))
	return opts
}

// producerOpts maps the producer knobs every peer gets onto kgo.
//
// Partitioners (all records here are keyless):
//   - ours (kafka-wire producer/partitioner.rs): KIP-480 sticky, a random
//     partition until its batch is sealed, then another;
//   - librdkafka: consistent_random with sticky.partitioning.linger.ms=10
//     (keyless records stick to one partition for 10 ms);
//   - Java: the built-in KIP-794 uniform sticky partitioner (switches after
//     batch.size bytes);
//   - franz-go here: kgo.StickyPartitioner(), KIP-480, the same scheme as
//     ours. Its default, UniformBytesPartitioner(64 KiB, …), would switch
//     after 64 KiB and so cap its batches at a quarter of batch.size.
func producerOpts(props [][2]string) []kgo.Opt {
	opts := []kgo.Opt{kgo.RecordPartitioner(kgo.StickyPartitioner())}
	shown := []string{"partitioner=StickyPartitioner(KIP-480)"}
	for _, kv := range props {
		k, v := kv[0], kv[1]
		switch k {
		case "acks":
			switch v {
			case "all", "-1":
				opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
			case "1":
				opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
			case "0":
				opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
			default:
				fail("acks=%s: expected all, -1, 1 or 0", v)
			}
		case "enable.idempotence":
			// Idempotence is on by default in kgo, and then exactly one
			// produce request is in flight per broker (ours: up to 5,
			// the requests after the first carrying full batches only).
			if !boolean(k, v) {
				opts = append(opts, kgo.DisableIdempotentWrite())
			}
		case "linger.ms":
			opts = append(opts, kgo.ProducerLinger(time.Duration(number(k, v))*time.Millisecond))
		case "batch.size":
			// The cap on one record batch before compression, as
			// batch.size is. kgo's default is the broker's default
			// max.message.bytes (1,000,012), which it never exceeds.
			opts = append(opts, kgo.ProducerBatchMaxBytes(number(k, v)))
		case "compression.type":
			var c kgo.CompressionCodec
			switch v {
			case "none":
				c = kgo.NoCompression()
			case "gzip":
				c = kgo.GzipCompression()
			case "snappy":
				c = kgo.SnappyCompression()
			case "lz4":
				c = kgo.Lz4Compression()
			case "zstd":
				c = kgo.ZstdCompression()
			default:
				fail("compression.type=%s: expected none, gzip, snappy, lz4 or zstd", v)
			}
			opts = append(opts, kgo.ProducerBatchCompression(c))
		// The buffer limits (cargo xtask bench passes them; the report
		// prints them), equalised with the other peers.
		case "max.buffered.records":
			opts = append(opts, kgo.MaxBufferedRecords(int(number(k, v))))
		case "max.buffered.bytes":
			opts = append(opts, kgo.MaxBufferedBytes(int(number(k, v))))
		default:
			unknown("producer", k, v)
		}
		shown = append(shown, k+"="+v)
	}
	fmt.Fprintf(os.Stderr, "franz-peer producer: %s\n", strings.Join(shown, " "))
	return opts
}

func client(bootstrap string, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(strings.Split(bootstrap, ",")...)}, opts...)...)
	if err != nil {
		fail("client: %v", err)
	}
	return cl
}

// consume reads exactly a.count records from every partition of a.topic,
// from the start, without a group.
func consume(a args) {
	// The clock starts before the client exists: kgo starts fetching in
	// the background as soon as it is created and buffers what it fetched
	// until polled (without a bound here: 1.4 GB of decoded lz4 records),
	// so a clock started at the first record returned measured almost
	// nothing (10^12 records/s for 1 KiB zstd). This clock includes the
	// first metadata request and fetch round trip, a few ms that the Rust
	// peers' clocks (first record received) leave out.
	started := time.Now()
	cl := client(a.bootstrap, append(consumerOpts(a.props),
		kgo.ConsumeTopics(a.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	defer cl.Close()
	var n, bytes int64
	lastProgress := time.Now()
	for n < a.count {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				fmt.Fprintf(os.Stderr, "franz-peer: fetch %s-%d: %v\n", t, p, err)
			}
		})
		got := int64(0)
		fetches.EachRecord(func(r *kgo.Record) {
			got++
			bytes += int64(len(r.Value))
		})
		if got > 0 {
			n += got
			lastProgress = time.Now()
		} else if time.Since(lastProgress) > 120*time.Second {
			fail("no record for 120 s after %d of %d", n, a.count)
		}
	}
	report(n, bytes, time.Since(started))
}

// produce sends a.count keyless records of a.size bytes and waits for
// every acknowledgement.
func produce(a args) {
	cl := client(a.bootstrap, append(producerOpts(a.props), kgo.DefaultProduceTopic(a.topic))...)
	defer cl.Close()
	value := []byte(strings.Repeat("x", a.size))
	var failed atomic.Int64
	var firstErr atomic.Value
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			if failed.Add(1) == 1 {
				firstErr.Store(err.Error())
			}
		}
	}
	ctx := context.Background()
	started := time.Now()
	for i := int64(0); i < a.count; i++ {
		// Produce blocks only while max.buffered.* is reached.
		cl.Produce(ctx, &kgo.Record{Value: value}, promise)
	}
	if err := cl.Flush(ctx); err != nil {
		fail("flush: %v", err)
	}
	took := time.Since(started)
	if f := failed.Load(); f != 0 {
		fail("%d records were not acknowledged (first: %v)", f, firstErr.Load())
	}
	report(a.count, a.count*int64(a.size), took)
}

func nowUs() uint64 { return uint64(time.Now().UnixMicro()) }

// stamped is a value carrying seq and its scheduled send time (µs, little
// endian, as bench/src/latency.rs), padded with 'x' to size (at least 16).
func stamped(seq, schedUs uint64, size int) []byte {
	v := make([]byte, max(size, 16))
	for i := 0; i < 8; i++ {
		v[i] = byte(seq >> (8 * i))
		v[8+i] = byte(schedUs >> (8 * i))
	}
	for i := 16; i < len(v); i++ {
		v[i] = 'x'
	}
	return v
}

func readStamp(v []byte) (seq, sched uint64, ok bool) {
	if len(v) < 16 {
		return 0, 0, false
	}
	for i := 0; i < 8; i++ {
		seq |= uint64(v[i]) << (8 * i)
		sched |= uint64(v[8+i]) << (8 * i)
	}
	return seq, sched, true
}

// samples is what the consuming side records, shared with the producer.
type samples struct {
	// Records seen at all (any phase).
	seen atomic.Uint64
	// Records from this sequence number on are measured.
	measureFrom atomic.Uint64
	mu          sync.Mutex
	latenciesUs []uint64
	// Scheduled send → acknowledgement, for measured records.
	acksUs []uint64
}

func (s *samples) record(v []byte) {
	now := nowUs()
	s.seen.Add(1)
	if seq, sched, ok := readStamp(v); ok && seq >= s.measureFrom.Load() {
		s.mu.Lock()
		s.latenciesUs = append(s.latenciesUs, sub(now, sched))
		s.mu.Unlock()
	}
}

func (s *samples) measured() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.latenciesUs)
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// percentile is the p quantile (0..=1) of v, the same index as latency.rs.
func percentile(v []uint64, p float64) uint64 {
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v[min(int(float64(len(v))*p), len(v)-1)]
}

func (s *samples) report(expected int64, took time.Duration) {
	s.mu.Lock()
	l := append([]uint64(nil), s.latenciesUs...)
	acks := append([]uint64(nil), s.acksUs...)
	s.mu.Unlock()
	if int64(len(l)) != expected {
		fail("only %d of %d measured records arrived", len(l), expected)
	}
	ackFigures := ""
	if len(acks) > 0 {
		ackFigures = fmt.Sprintf(" ack_p50_us=%d ack_p99_us=%d", percentile(acks, 0.50), percentile(acks, 0.99))
	}
	fmt.Printf("LATENCY records=%d p50_us=%d p99_us=%d max_us=%d%s\n",
		len(l), percentile(l, 0.50), percentile(l, 0.99), percentile(l, 1.0), ackFigures)
	report(expected, 0, took)
}

// pacer drives the phases; send(seq, schedUs) sends one record.
type pacer struct {
	samples *samples
	rate    int64
	nextSeq uint64
}

// untilConsuming sends one record every 50 ms until the consumer sees one
// (it has joined and fetches), up to 60 s.
func (p *pacer) untilConsuming(send func(seq, sched uint64)) {
	deadline := time.Now().Add(60 * time.Second)
	for p.samples.seen.Load() == 0 {
		if time.Now().After(deadline) {
			fail("the consumer never saw a record")
		}
		send(p.nextSeq, nowUs())
		p.nextSeq++
		time.Sleep(50 * time.Millisecond)
	}
}

// paced sends n records at the fixed rate; returns how long it took.
func (p *pacer) paced(n int64, send func(seq, sched uint64)) time.Duration {
	start := time.Now()
	startUs := nowUs()
	for i := int64(0); i < n; i++ {
		offset := time.Duration(i * int64(time.Second) / max(p.rate, 1))
		if d := time.Until(start.Add(offset)); d > 0 {
			time.Sleep(d)
		}
		send(p.nextSeq, startUs+uint64(offset.Microseconds()))
		p.nextSeq++
	}
	return time.Since(start)
}

// run is the whole run: handshake, one second of warm-up, count measured.
func (p *pacer) run(count int64, send func(seq, sched uint64)) time.Duration {
	p.untilConsuming(send)
	p.paced(p.rate, send)
	p.samples.measureFrom.Store(p.nextSeq)
	took := p.paced(count, send)
	deadline := time.Now().Add(30 * time.Second)
	for int64(p.samples.measured()) < count && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return took
}

// latency: a kgo producer (producer.* knobs: linger 0, acks=all,
// idempotent) and a kgo group consumer (a fresh group from the latest
// offset, no commits, as rdkafka-latency) in one process, one clock.
func latency(a args) {
	s := &samples{}
	s.measureFrom.Store(math.MaxUint64)
	group := fmt.Sprintf("bench-franz-%d-%d", os.Getpid(), time.Now().UnixMilli())
	consumer := client(a.bootstrap, append(consumerOpts(a.props),
		kgo.ConsumeTopics(a.topic),
		kgo.ConsumerGroup(group),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))...)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fetches := consumer.PollFetches(ctx)
			fetches.EachError(func(t string, p int32, err error) {
				if ctx.Err() == nil {
					fmt.Fprintf(os.Stderr, "franz-peer: fetch %s-%d: %v\n", t, p, err)
				}
			})
			fetches.EachRecord(func(r *kgo.Record) { s.record(r.Value) })
		}
	}()

	producer := client(a.bootstrap, append(producerOpts(a.producerProps), kgo.DefaultProduceTopic(a.topic))...)
	var failed atomic.Int64
	p := &pacer{samples: s, rate: a.rate}
	took := p.run(a.count, func(seq, sched uint64) {
		// Produce returns at once (the buffer never fills at this rate).
		producer.Produce(context.Background(), &kgo.Record{Value: stamped(seq, sched, a.size)},
			func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
				} else if seq >= s.measureFrom.Load() {
					took := sub(nowUs(), sched)
					s.mu.Lock()
					s.acksUs = append(s.acksUs, took)
					s.mu.Unlock()
				}
			})
	})
	stop()
	<-done
	consumer.Close()
	flushCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := producer.Flush(flushCtx); err != nil {
		fail("flush: %v", err)
	}
	cancel()
	producer.Close()
	if f := failed.Load(); f != 0 {
		fail("%d records were not acknowledged", f)
	}
	s.report(a.count, took)
}
