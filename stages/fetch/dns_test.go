package fetch

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"jetqa/schemas"
	"jetqa/streams/natstest"
)

// nxdomainServer is a DNS server on loopback that answers every query
// "no such name" (RCODE 3), so a test sees a real lookup fail without any
// packet leaving the machine.
func nxdomainServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			resp := append([]byte(nil), buf[:n]...)
			resp[2] = 0x80 | (buf[2] & 0x01) // QR=1, keep RD
			resp[3] = 0x80 | 3               // RA=1, RCODE=NXDOMAIN
			// Keep the question, no answers, no authority, no additional.
			resp[6], resp[7], resp[8], resp[9], resp[10], resp[11] = 0, 0, 0, 0, 0, 0
			_, _ = pc.WriteTo(resp, addr)
		}
	}()
	return pc.LocalAddr().String()
}

func TestDNSFailureEndsTheJobWithAReason(t *testing.T) {
	dnsAddr := nxdomainServer(t)
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dnsAddr)
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Resolver: resolver}).DialContext}}
	dir := t.TempDir()
	s, err := New(Config{Host: "h", CacheDir: filepath.Join(dir, "cache"), JobsDir: filepath.Join(dir, "jobs"), HTTPClient: client},
		natstest.Start(t).Bus("fetch"), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.fetchAsset(context.Background(), 1, schemas.WorkerRef{Host: "h", Instance: 1}, "ISO", "http://mirror.example.test/testos.iso", "", t.TempDir())
	var je errJob
	if !errors.As(err, &je) || !strings.Contains(err.Error(), "ISO=http://mirror.example.test/testos.iso") || !strings.Contains(err.Error(), "no such host") {
		t.Fatalf("error %v, want a job error naming the asset and the failed lookup", err)
	}
	t.Log(err)
}
