package streams

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"time"
)

// TLSFiles names the PEM files of a node's TLS material, as given by the
// --tls-cert, --tls-key and --tls-ca flags.
type TLSFiles struct {
	// Cert is the node's certificate, Key its private key.
	Cert, Key string
	// CA is the certificate of the authority that signed the nodes'
	// certificates: `jetqa admin tls init` makes one for a lab.
	CA string
}

// tlsInitHint tells a user without certificates how to get some.
const tlsInitHint = "create lab certificates with `jetqa admin tls init`"

// ServerTLS is the TLS configuration of the NATS server's client port.
// Clients prove who they are with NATS credentials, not certificates, so
// none is asked for; a CA, if given, only verifies the certificates other
// nodes present.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	cert, err := loadKeyPair(f)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.NoClientCert,
	}
	if f.CA != "" {
		if cfg.ClientCAs, err = loadCAPool(f.CA); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// ClientTLS is the TLS configuration of a client (worker, matcher, CLI)
// that trusts the servers signed by the CA in caFile. An empty caFile
// returns nil: the system's roots decide, as for a public certificate.
func ClientTLS(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pool, err := loadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// RouteTLS is the TLS configuration of the routes between the servers of
// a cluster. A route is both ends at once, so each node presents its
// certificate either way and accepts only peers signed by the lab CA:
// whoever reaches the cluster port without one cannot join the cluster.
func RouteTLS(f TLSFiles) (*tls.Config, error) {
	if f.CA == "" {
		return nil, fmt.Errorf("cluster routes with TLS need --tls-ca: the CA that signed every node's certificate (%s)", tlsInitHint)
	}
	cert, err := loadKeyPair(f)
	if err != nil {
		return nil, err
	}
	pool, err := loadCAPool(f.CA)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// loadKeyPair loads f.Cert and f.Key, with errors that say which file is
// wrong and what to do about it.
func loadKeyPair(f TLSFiles) (tls.Certificate, error) {
	if f.Cert == "" || f.Key == "" {
		return tls.Certificate{}, fmt.Errorf("TLS needs both --tls-cert and --tls-key (%s)", tlsInitHint)
	}
	certPEM, err := readPEM("--tls-cert", f.Cert)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEM("--tls-key", f.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("--tls-cert %s with --tls-key %s: %w (is the key the certificate's own?)", f.Cert, f.Key, err)
	}
	// An expired certificate fails only at the other end, as a handshake
	// error there: say it here, where it can be fixed.
	if now := time.Now(); now.After(cert.Leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("--tls-cert %s expired on %s: make a new one with `jetqa admin tls init --server-only`", f.Cert, cert.Leaf.NotAfter.Format(time.DateOnly))
	}
	return cert, nil
}

// loadCAPool reads the lab CA's certificate into a pool.
func loadCAPool(caFile string) (*x509.CertPool, error) {
	caPEM, err := readPEM("--tls-ca", caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--tls-ca %s: holds no PEM certificate (use the ca.pem that `jetqa admin tls init` wrote)", caFile)
	}
	return pool, nil
}

// readPEM reads a PEM file given by flag.
func readPEM(flag, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s %s: no such file: %s", flag, path, tlsInitHint)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if block, _ := pem.Decode(b); block == nil {
		return nil, fmt.Errorf("%s %s: not a PEM file", flag, path)
	}
	return b, nil
}

// PEMPair is a certificate and its private key, PEM-encoded as they are
// written to files.
type PEMPair struct {
	Cert, Key []byte
}

// LabCAName is the common name of the CA that MakeLabCA makes.
const LabCAName = "jetqa lab CA"

// MakeLabCA makes a private certificate authority for a lab, valid from
// now for validity, that signs the certificates of the lab's servers.
func MakeLabCA(validity time.Duration) (PEMPair, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: LabCAName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// It signs server certificates only, never another CA.
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return makeCert(tmpl, nil, nil)
}

// MakeServerCert makes a certificate for a server reachable under hosts
// (DNS names or IP addresses), signed by ca and valid from now for
// validity. It serves both ends of TLS, so one certificate serves the
// client port and the cluster routes.
func MakeServerCert(ca PEMPair, hosts []string, validity time.Duration) (PEMPair, error) {
	caPair, err := tls.X509KeyPair(ca.Cert, ca.Key)
	if err != nil {
		return PEMPair{}, fmt.Errorf("lab CA: %w", err)
	}
	if !caPair.Leaf.IsCA {
		return PEMPair{}, fmt.Errorf("lab CA: %q is not a certificate authority", caPair.Leaf.Subject.CommonName)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		switch ip := net.ParseIP(h); {
		case h == "":
			continue
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
		if tmpl.Subject.CommonName == "" {
			tmpl.Subject.CommonName = h
		}
	}
	if tmpl.Subject.CommonName == "" {
		return PEMPair{}, errors.New("server certificate: no host names")
	}
	signer, ok := caPair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return PEMPair{}, fmt.Errorf("lab CA: key is a %T, not ECDSA", caPair.PrivateKey)
	}
	return makeCert(tmpl, caPair.Leaf, signer)
}

// clockSkew backdates certificates so that a host whose clock runs a
// little behind accepts one made just now.
const clockSkew = time.Hour

// makeCert makes a new P-256 key and a certificate for it from tmpl,
// signed by parent's key, or by itself when parent is nil.
func makeCert(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (PEMPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEMPair{}, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		return PEMPair{}, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return PEMPair{}, fmt.Errorf("certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return PEMPair{}, err
	}
	return PEMPair{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}
