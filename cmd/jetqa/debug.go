package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// debugUsage is the --debug-listen flag's help.
const debugUsage = "serve Go's profiles (heap, goroutines, CPU) on this address, e.g. 127.0.0.1:6060, for `go tool pprof http://ADDR/debug/pprof/heap`; nothing else is served there, and nothing is by default. Keep it on loopback: a profile shows the process's insides"

// addDebug serves net/http/pprof's handlers on addr while the stages run.
// It listens before it returns, so a wrong address is told at once.
func (a *assembly) addDebug(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--debug-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	a.log.Info("profiles served", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	a.add("debug listener", func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
		defer stop()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}
