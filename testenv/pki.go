package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki holds the paths of the generated files and the CA certificate that
// goes into every kubeconfig.
type pki struct {
	caPEM                   []byte
	servingCert, servingKey string
	saKey, saPub            string
}

// credentials are the PKI and tokens of this start: those an earlier start
// left in dir when keep is set and they are all there, else fresh ones.
func credentials(dir string, keep bool) (*pki, map[string]string, error) {
	if keep {
		p, tokens, err := readCredentials(dir)
		if err == nil {
			log.Printf("reusing the credentials in %s", dir)
			return p, tokens, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("credentials in %s: %w", dir, err)
		}
	}
	p, err := writePKI(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	tokens, err := writeTokens(filepath.Join(dir, "tokens.csv"))
	if err != nil {
		return nil, nil, fmt.Errorf("tokens: %w", err)
	}
	return p, tokens, nil
}

// pkiIn names the files of a PKI in dir, without the CA certificate's bytes.
func pkiIn(dir string) *pki {
	return &pki{
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		saPub:       filepath.Join(dir, "sa.pub"),
	}
}

// readCredentials reads what writePKI and writeTokens wrote in dir.
func readCredentials(dir string) (*pki, map[string]string, error) {
	p := pkiIn(dir)
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, nil, err
	}
	p.caPEM = caPEM
	for _, f := range []string{p.servingCert, p.servingKey, p.saKey, p.saPub} {
		if _, err := os.Stat(f); err != nil {
			return nil, nil, err
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "tokens.csv"))
	if err != nil {
		return nil, nil, err
	}
	tokens := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		fields := strings.SplitN(line, ",", 3)
		if len(fields) < 2 {
			return nil, nil, fmt.Errorf("tokens.csv: bad line %q", line)
		}
		tokens[fields[1]] = fields[0]
	}
	for _, id := range identities {
		if tokens[id.user] == "" {
			return nil, nil, fmt.Errorf("tokens.csv: no token for %s", id.user)
		}
	}
	return p, tokens, nil
}

// writePKI creates a fresh CA, a serving certificate for the apiserver and a
// service-account signing key on every start. We issue the serving cert
// ourselves rather than let kube-apiserver self-sign into --cert-dir so that
// the CA is known before the server starts (it goes into the kubeconfigs) and
// the SANs are exactly what clients need: rustls (used by the Rust kube
// client) verifies https://127.0.0.1:PORT only against an IP SAN 127.0.0.1,
// and rejects a CA certificate presented as the server's leaf.
func writePKI(dir string) (*pki, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "cost-model testenv CA"},
		NotBefore:             now.Add(-time.Hour), // tolerate small clock skew
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}

	p := pkiIn(dir)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := []struct {
		path, typ string
		der       []byte
		priv      *ecdsa.PrivateKey
	}{
		{filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER, nil},
		{p.servingCert, "CERTIFICATE", der, nil},
		{p.servingKey, "", nil, key},
		{p.saKey, "", nil, saKey},
		{p.saPub, "PUBLIC KEY", saPubDER, nil},
	}
	for _, f := range files {
		if f.priv != nil {
			b, err := x509.MarshalECPrivateKey(f.priv)
			if err != nil {
				return nil, err
			}
			f.typ, f.der = "EC PRIVATE KEY", b
		}
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// writeTokens writes a --token-auth-file with a new random bearer token per
// identity (CSV: token,user,uid[,"group1,group2"]) and returns user → token.
// Static tokens are the simplest authentication a Rust client can use: a
// kubeconfig "token:" field, no client certificates.
func writeTokens(path string) (map[string]string, error) {
	tokens := map[string]string{}
	var b strings.Builder
	for _, id := range identities {
		raw := make([]byte, 16)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		tok := hex.EncodeToString(raw)
		tokens[id.user] = tok
		fmt.Fprintf(&b, "%s,%s,%s", tok, id.user, id.user)
		if id.group != "" {
			fmt.Fprintf(&b, ",%q", id.group)
		}
		b.WriteString("\n")
	}
	return tokens, os.WriteFile(path, []byte(b.String()), 0o600)
}
