// Command probe listens on ports, dials them with a timeout, and asks or answers DNS questions, so that
// tests can tell whether the network lets one pod reach another.
//
//	probe listen tcp:5432 tcp:9000 dns:53   serve: TCP accepts and writes "ok <port>\n"; dns answers every A question with 192.0.2.53
//	probe dial HOST:PORT [TIMEOUT]          exit 0 if the TCP connection opens and the greeting arrives, 1 otherwise
//	probe dns SERVER:PORT NAME [TIMEOUT]    exit 0 and print the A records if SERVER answers NAME, 1 otherwise
//	probe api [TIMEOUT]                     GET /version from the in-cluster API server (KUBERNETES_SERVICE_HOST) with the
//	                                        pod's service account token and CA; exit 0 and print it on HTTP 200
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// rogueAnswer is the address the DNS responder of `probe listen dns:PORT` gives for every name.
var rogueAnswer = [4]byte{192, 0, 2, 53}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "listen":
		err = listen(os.Args[2:])
	case "dial":
		err = dial(os.Args[2:])
	case "dns":
		err = lookup(os.Args[2:])
	case "api":
		err = api(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: probe listen tcp:PORT|dns:PORT ... | dial HOST:PORT [TIMEOUT] | dns SERVER:PORT NAME [TIMEOUT] | api [TIMEOUT]")
	os.Exit(2)
}

func timeoutArg(args []string, i int) (time.Duration, error) {
	if len(args) <= i {
		return 3 * time.Second, nil
	}
	return time.ParseDuration(args[i])
}

func listen(specs []string) error {
	if len(specs) == 0 {
		return errors.New("listen: no ports")
	}
	errs := make(chan error, len(specs))
	for _, spec := range specs {
		kind, port, ok := strings.Cut(spec, ":")
		if !ok {
			return fmt.Errorf("listen: %q is not tcp:PORT or dns:PORT", spec)
		}
		switch kind {
		case "tcp":
			ln, err := net.Listen("tcp", ":"+port)
			if err != nil {
				return err
			}
			go serveTCP(ln, port, errs)
		case "dns":
			conn, err := net.ListenPacket("udp", ":"+port)
			if err != nil {
				return err
			}
			go serveDNS(conn, errs)
		default:
			return fmt.Errorf("listen: unknown kind %q", kind)
		}
		fmt.Println("listening", spec)
	}
	return <-errs
}

func serveTCP(ln net.Listener, port string, errs chan<- error) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		go func() {
			defer conn.Close()
			_, _ = fmt.Fprintf(conn, "ok %s\n", port)
		}()
	}
}

// serveDNS answers every query with one A record (rogueAnswer): enough for a resolver that must not be reachable.
func serveDNS(conn net.PacketConn, errs chan<- error) {
	buf := make([]byte, 512)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			errs <- err
			return
		}
		if n < 12 {
			continue
		}
		question := buf[12:n]
		end := 0
		for end < len(question) && question[end] != 0 {
			end += int(question[end]) + 1
		}
		end += 5 // zero label, QTYPE, QCLASS
		if end > len(question) {
			continue
		}
		reply := make([]byte, 0, 12+end+16)
		reply = append(reply, buf[0], buf[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0)
		reply = append(reply, question[:end]...)
		reply = append(reply, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4)
		reply = append(reply, rogueAnswer[:]...)
		_, _ = conn.WriteTo(reply, addr)
	}
}

func dial(args []string) error {
	if len(args) < 1 {
		usage()
	}
	timeout, err := timeoutArg(args, 1)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", args[0], timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	greeting, err := io.ReadAll(io.LimitReader(conn, 64))
	if err != nil && len(greeting) == 0 {
		return fmt.Errorf("connected to %s but read nothing: %w", args[0], err)
	}
	fmt.Printf("connected %s %s", args[0], greeting)
	return nil
}

func lookup(args []string) error {
	if len(args) < 2 {
		usage()
	}
	timeout, err := timeoutArg(args, 2)
	if err != nil {
		return err
	}
	server := args[0]
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", server)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	addrs, err := resolver.LookupIPAddr(ctx, args[1])
	if err != nil {
		return err
	}
	for _, addr := range addrs {
		fmt.Println(addr.IP)
	}
	return nil
}

const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount"

func api(args []string) error {
	timeout, err := timeoutArg(args, 0)
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(serviceAccount + "/ca.crt")
	if err != nil {
		return err
	}
	token, err := os.ReadFile(serviceAccount + "/token")
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("no certificate in the service account's ca.crt")
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	host := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	req, err := http.NewRequest(http.MethodGet, "https://"+host+"/version", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET https://%s/version: %s %s", host, resp.Status, body)
	}
	fmt.Printf("%s\n", body)
	return nil
}
