// Command testenv runs a real etcd and a real kube-apiserver in one process,
// on 127.0.0.1 only, so that cost-model's leader election can be tested
// against genuine Lease semantics (resourceVersion conflicts, RBAC denials)
// without Docker or a cluster.
//
// Everything it creates lives in --state-dir: the etcd data, a throw-away CA
// and serving certificate, static bearer tokens, and one kubeconfig per
// identity. When the control plane answers and the RBAC objects exist it
// writes "<state-dir>/ready"; it then serves until SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// identity is one static-token user and the kubeconfig written for it.
type identity struct {
	user, group, kubeconfig string
}

var identities = []identity{
	{"admin", "system:masters", "admin.kubeconfig"},
	{"cost-model-replica", "", "replica.kubeconfig"},
	{"cost-model-norbac", "", "norbac.kubeconfig"},
}

const (
	namespace = "default"
	roleName  = "cost-model-leader-election"
)

func main() {
	fs := flag.NewFlagSet("testenv", flag.ExitOnError)
	stateDir := fs.String("state-dir", "", "directory for etcd data, certificates, tokens and kubeconfigs (required)")
	apiPort := fs.Int("apiserver-port", 0, "kube-apiserver secure port on 127.0.0.1 (0: pick a free one)")
	etcdPort := fs.Int("etcd-port", 0, "etcd client port on 127.0.0.1 (0: pick a free one)")
	verbosity := fs.Int("v", 0, "kube-apiserver log verbosity")
	keep := fs.Bool("keep-credentials", false, "reuse the CA, certificates and tokens an earlier start left in --state-dir, so kubeconfigs written then still work (a restart; pin the ports too)")
	fs.Parse(os.Args[1:])
	if *stateDir == "" {
		fmt.Fprintln(os.Stderr, "testenv: --state-dir is required")
		os.Exit(2)
	}
	log.SetPrefix("testenv: ")
	// A signal during startup cancels the context: that is a stop, not a failure.
	if err := run(*stateDir, *apiPort, *etcdPort, *verbosity, *keep); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	log.Print("stopped")
}

func run(stateDir string, apiPort, etcdPort, verbosity int, keep bool) error {
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return err
	}
	readyFile := filepath.Join(dir, "ready")
	pidFile := filepath.Join(dir, "testenv.pid")
	// A ready file left by a killed instance must not make a waiting script
	// believe this one is ready.
	os.Remove(readyFile)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)
	defer os.Remove(readyFile)

	// Build the apiserver command first: it installs the SIGTERM/SIGINT
	// handler (it may only be installed once per process), and its context is
	// the one we use for everything, so a signal at any point stops us.
	cmd := app.NewAPIServerCommand()
	ctx := cmd.Context()

	if apiPort == 0 {
		if apiPort, err = freePort(); err != nil {
			return err
		}
	}
	if etcdPort == 0 {
		if etcdPort, err = freePort(); err != nil {
			return err
		}
	}
	apiURL := fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	p, tokens, err := credentials(pkiDir, keep)
	if err != nil {
		return err
	}

	etcd, err := startEtcd(ctx, filepath.Join(dir, "etcd"), etcdPort)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	log.Printf("etcd ready on %s", etcd.Clients[0].Addr())

	cmd.SetArgs([]string{
		"--etcd-servers=http://" + etcd.Clients[0].Addr().String(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + pkiDir, // unused with explicit TLS files, but keeps it off /var/run
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--service-account-issuer=" + apiURL,
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--token-auth-file=" + filepath.Join(pkiDir, "tokens.csv"),
		// No controller-manager runs, so nothing would create the
		// ServiceAccounts this admission plugin insists on.
		"--disable-admission-plugins=ServiceAccount",
		// Fewer background goroutines and writes on a small machine: no
		// API priority & fairness controllers, no profiling endpoints, and
		// no reconciling of the "kubernetes" Service endpoints.
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--endpoint-reconciler-type=none",
		"--v=" + strconv.Itoa(verbosity),
	})
	apiDone := make(chan error, 1)
	go func() { apiDone <- cmd.Execute() }()

	for _, id := range identities {
		if err := writeKubeconfig(filepath.Join(dir, id.kubeconfig), apiURL, p.caPEM, id.user, tokens[id.user]); err != nil {
			return err
		}
	}

	admin, err := clientFor(filepath.Join(dir, "admin.kubeconfig"))
	if err != nil {
		return err
	}
	if err := waitReady(ctx, admin, apiDone); err != nil {
		return err
	}
	if err := ensureRBAC(ctx, admin); err != nil {
		return fmt.Errorf("rbac: %w", err)
	}
	if err := os.WriteFile(readyFile, []byte(apiURL+"\n"), 0o644); err != nil {
		return err
	}
	log.Printf("ready: %s, kubeconfigs in %s", apiURL, dir)

	// The apiserver returns (nil) once a signal cancelled its context and it
	// drained; only then is it safe to stop etcd (the deferred Close).
	select {
	case err := <-apiDone:
		return err
	case err := <-etcd.Err():
		return fmt.Errorf("etcd failed: %w", err)
	}
}

// freePort asks the kernel for an unused loopback port. Another process could
// grab it before we bind it again, but on a test machine that is rare enough.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcd runs a single-member etcd tuned for tests: no fsync (the data is
// disposable and fsync dominates latency on slow disks), a small backend
// quota, quiet logs.
func startEtcd(ctx context.Context, dataDir string, clientPort int) (*embed.Etcd, error) {
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}

	cfg := embed.NewConfig()
	cfg.Name = "testenv"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true
	cfg.QuotaBackendBytes = 256 << 20
	cfg.SnapshotCount = 5000
	cfg.EnableGRPCGateway = false
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(time.Minute):
		e.Close()
		return nil, errors.New("not ready after 1m")
	}
}

func clientFor(kubeconfig string) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// writeKubeconfig writes a single-context kubeconfig: CA data inline (so the
// file is self-contained), the https://127.0.0.1:PORT URL, the user's bearer
// token and namespace "default".
func writeKubeconfig(path, server string, caPEM []byte, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: user, Namespace: namespace}
	cfg.CurrentContext = "testenv"
	return clientcmd.WriteToFile(*cfg, path)
}

// waitReady polls until /readyz passes (all post-start hooks, including the
// RBAC bootstrap roles, have run) and the apiserver has created the "default"
// namespace, which Leases and our Role live in.
func waitReady(ctx context.Context, cs *kubernetes.Clientset, apiDone <-chan error) error {
	deadline := time.After(3 * time.Minute)
	for {
		// One short attempt at a time: client-go would otherwise retry a
		// refused connection for ~10s, hiding an apiserver that has exited.
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").MaxRetries(0).DoRaw(attempt)
		if err == nil {
			_, err = cs.CoreV1().Namespaces().Get(attempt, namespace, metav1.GetOptions{})
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case err := <-apiDone:
			return fmt.Errorf("kube-apiserver exited before ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("kube-apiserver not ready after 3m: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ensureRBAC grants cost-model-replica exactly what leader election needs on
// Leases in "default", and nothing else. Create-or-update, because etcd data
// may survive a restart with the same state dir.
func ensureRBAC(ctx context.Context, cs *kubernetes.Clientset) error {
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: roleName, Namespace: namespace},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"coordination.k8s.io"},
			Resources: []string{"leases"},
			Verbs:     []string{"get", "create", "update"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: roleName, Namespace: namespace},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "cost-model-replica"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: roleName},
	}
	roles := cs.RbacV1().Roles(namespace)
	_, err := roles.Create(ctx, role, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = roles.Update(ctx, role, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	bindings := cs.RbacV1().RoleBindings(namespace)
	_, err = bindings.Create(ctx, binding, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = bindings.Update(ctx, binding, metav1.UpdateOptions{})
	}
	return err
}
