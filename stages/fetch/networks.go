package fetch

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"

	"jetqa/stages/fetch/cache"
)

// ParseNetworks reads a worker's forbidden networks: CIDR prefixes or
// single addresses, comma-separated ("169.254.0.0/16,10.0.0.0/8,::1").
func ParseNetworks(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q: give a network as 10.0.0.0/8 or an address", item)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// forbiddenIn is the network of nets that holds addr, if any.
func forbiddenIn(nets []netip.Prefix, addr netip.Addr) (netip.Prefix, bool) {
	addr = addr.Unmap()
	for _, n := range nets {
		if n.Contains(addr) {
			return n, true
		}
	}
	return netip.Prefix{}, false
}

// guardedClient downloads as http.DefaultClient does, but never from an
// address in nets: the host of each request (redirects included) is
// resolved and refused when one of its addresses is forbidden, and each
// connection is checked again once dialled, so a name that resolves
// differently the second time gets no further.
func guardedClient(nets []netip.Prefix) *http.Client {
	refuse := func(host string, addr netip.Addr, n netip.Prefix) error {
		return cache.Permanent(fmt.Errorf("this worker does not let jobs download from %s (%s is in %s; --forbid-networks)", host, addr, n))
	}
	dialer := &net.Dialer{Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		if a, err := netip.ParseAddr(host); err == nil {
			if n, bad := forbiddenIn(nets, a); bad {
				return refuse(host, a, n)
			}
		}
		return nil
	}}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = dialer.DialContext
	return &http.Client{Transport: roundTripper(func(req *http.Request) (*http.Response, error) {
		host := req.URL.Hostname()
		a, n, bad, err := resolvesInto(req.Context(), nets, host)
		if err != nil {
			return nil, err
		}
		if bad {
			return nil, refuse(host, a, n)
		}
		return t.RoundTrip(req)
	})}
}

// resolvesInto resolves host and says which of its addresses is in which
// of nets, if one is.
func resolvesInto(ctx context.Context, nets []netip.Prefix, host string) (netip.Addr, netip.Prefix, bool, error) {
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, netip.Prefix{}, false, err
	}
	for _, a := range addrs {
		if n, bad := forbiddenIn(nets, a); bad {
			return a, n, true, nil
		}
	}
	return netip.Addr{}, netip.Prefix{}, false, nil
}

// reachable refuses a repository URL whose host is, or resolves to, an
// address of the forbidden networks. Unlike a download's, git's own
// connections are not checked again once made, nor its redirects.
func (s *Stage) reachable(ctx context.Context, repo string) error {
	if len(s.cfg.ForbidNetworks) == 0 {
		return nil
	}
	var host string
	if u, err := url.Parse(repo); err == nil && u.Host != "" {
		host = u.Hostname()
	} else if at, colon := strings.Index(repo, "@"), strings.Index(repo, ":"); !strings.Contains(repo, "://") && at >= 0 && colon > at {
		host = repo[at+1 : colon] // scp-like: git@host:path
	} else {
		return nil // a local path: git says what is wrong with it
	}
	a, n, bad, err := resolvesInto(ctx, s.cfg.ForbidNetworks, host)
	if err != nil || !bad {
		return nil // not forbidden, or unreachable: git says so
	}
	return fmt.Errorf("this worker does not let jobs fetch from %s (%s is in %s; --forbid-networks)", host, a, n)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
