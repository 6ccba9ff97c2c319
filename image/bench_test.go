package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// benchImage is a large namespace: 1,000 sets of 64 semaphores and 5,000
// single-process lists of two entries each.
func benchImage() *Image {
	im := &Image{Created: time.Unix(1795788000, 0), KernelRelease: "6.18", SemundoVersion: "bench", IPCNamespace: 1,
		Limits: Limits{Semmsl: 32000, Semmns: 1 << 30, Semopm: 500, Semmni: 32000}}
	for i := range 1000 {
		s := Set{ID: int32(i), Key: int32(i + 1), Mode: 0o600, Nsems: 64, Ctime: 1,
			Values: make([]uint16, 64), Sempids: make([]int32, 64)}
		for k := range s.Values {
			s.Values[k] = uint16(k * i % 100)
			s.Sempids[k] = int32(1000 + k)
		}
		im.Sets = append(im.Sets, s)
	}
	for i := range 5000 {
		l := List{Processes: []Process{{PID: int32(10000 + i), Comm: fmt.Sprint("worker-", i), TIDs: []int32{int32(10000 + i)}}}}
		for k := range 2 {
			adj := make([]int16, 64)
			adj[k] = -1
			l.Entries = append(l.Entries, Entry{Semid: int32((i + k*500) % 1000), Adj: adj})
		}
		im.Lists = append(im.Lists, l)
	}
	return im
}

// BenchmarkDecode compares Decode with encoding/json reading the same
// bytes into mirror types (no validation, no version check): the baseline.
func BenchmarkDecode(b *testing.B) {
	data := encodeRaw(b, benchImage())
	b.Run("baseline-encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			var j jsonImage
			if err := json.Unmarshal(data, &j); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decode", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncode compares Encode (Validate included) with json.Marshal of
// the same image's mirror: the baseline.
func BenchmarkEncode(b *testing.B) {
	im := benchImage()
	var j jsonImage
	if err := json.Unmarshal(encodeRaw(b, im), &j); err != nil {
		b.Fatal(err)
	}
	size := int64(len(encodeRaw(b, im)))
	b.Run("baseline-json-Marshal", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&j); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Encode", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			if err := Encode(&buf, im); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// largeImage is a namespace at the default SEMMNI: 32,000 sets of 8
// semaphores (values and sempids recorded) and 4,000 lists, each shared by
// two processes of two threads and holding 4 entries.
func largeImage() *Image {
	im := &Image{Created: time.Unix(1795788000, 0), KernelRelease: "6.18", SemundoVersion: "bench", IPCNamespace: 1,
		Limits: Limits{Semmsl: 32000, Semmns: 1 << 30, Semopm: 500, Semmni: 32000}}
	const nsems = 8
	for i := range 32000 {
		s := Set{ID: int32(i), Key: int32(i + 1), UID: 1000, GID: 1000, Mode: 0o600, Nsems: nsems,
			Otime: 1795788000 + int64(i), Ctime: 1795787000, Values: make([]uint16, nsems), Sempids: make([]int32, nsems)}
		for k := range nsems {
			s.Values[k] = uint16(k * i % 32768)
			s.Sempids[k] = int32(20000 + i%4000)
		}
		im.Sets = append(im.Sets, s)
	}
	for i := range 4000 {
		pid := int32(20000 + 4*i)
		l := List{Processes: []Process{
			{PID: pid, Comm: fmt.Sprint("worker-", i), TIDs: []int32{pid, pid + 1}},
			{PID: pid + 2, Comm: fmt.Sprint("worker-", i), Stopped: i%2 == 0, TIDs: []int32{pid + 2, pid + 3}},
		}}
		for k := range 4 {
			adj := make([]int16, nsems)
			adj[k] = -1
			l.Entries = append(l.Entries, Entry{Semid: int32(i*8 + k), Adj: adj})
		}
		im.Lists = append(im.Lists, l)
	}
	return im
}

// BenchmarkDecodeLarge decodes an image of 32,000 sets (about 10 MB).
func BenchmarkDecodeLarge(b *testing.B) {
	data := encodeRaw(b, largeImage())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
