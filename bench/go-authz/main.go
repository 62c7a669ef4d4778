// Command go-authz is the benchmark's compiled reference ext_authz server (issue 9): a
// peer to measure keygate against through Envoy, not part of the product. It does the
// same work as keygate for a known token: find the credential (Authorization: Bearer,
// x-api-key, or the JSON body's top-level api_key), SHA-256 it, look the digest up in an
// in-memory map, and allow with the upstream key and client id set and the inbound
// credential removed; anything else is a 401 with a JSON body.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const (
	upstreamHeader = "x-api-key"
	clientIDHeader = "x-client-id"
	deniedBody     = `{"type":"UNAUTHORIZED","message":"A valid API key is required."}`
)

// client is one keystore entry, as the bench writes it: {"<sha256 hex>": {...}}.
type client struct {
	ID          string `json:"id"`
	UpstreamKey string `json:"upstream_key"`
}

type server struct {
	authv3.UnimplementedAuthorizationServer
	clients map[string]client
}

type bodyCredential struct {
	APIKey string `json:"api_key"`
}

// credential returns the token from the headers or the body; "" when there is none or
// when two different credentials disagree (both deny).
func credential(req *authv3.AttributeContext_HttpRequest) string {
	headers := req.GetHeaders()
	token := ""
	if auth, ok := headers["authorization"]; ok && len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		token = strings.TrimSpace(auth[7:])
	} else if key, ok := headers["x-api-key"]; ok {
		token = strings.TrimSpace(key)
	}
	body := req.GetRawBody()
	if len(body) == 0 && req.GetBody() != "" {
		body = []byte(req.GetBody())
	}
	if len(body) > 0 {
		var parsed bodyCredential
		if json.Unmarshal(body, &parsed) == nil && parsed.APIKey != "" {
			fromBody := strings.TrimSpace(parsed.APIKey)
			if token != "" && token != fromBody {
				return ""
			}
			token = fromBody
		}
	}
	return token
}

func denied() *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "content-type", Value: "application/json"}},
				{Header: &corev3.HeaderValue{Key: "www-authenticate", Value: "Bearer"}},
			},
			Body: deniedBody,
		}},
	}
}

func (s *server) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	token := credential(req.GetAttributes().GetRequest().GetHttp())
	if token == "" {
		return denied(), nil
	}
	sum := sha256.Sum256([]byte(token))
	found, ok := s.clients[hex.EncodeToString(sum[:])]
	if !ok {
		return denied(), nil
	}
	overwrite := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: upstreamHeader, Value: found.UpstreamKey}, AppendAction: overwrite},
				{Header: &corev3.HeaderValue{Key: clientIDHeader, Value: found.ID}, AppendAction: overwrite},
			},
			HeadersToRemove: []string{"authorization"},
		}},
	}, nil
}

func main() {
	keys := flag.String("keys", "", "JSON file: {\"<sha256 hex>\": {\"id\": ..., \"upstream_key\": ...}}")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	raw, err := os.ReadFile(*keys)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clients := map[string]client{}
	if err := json.Unmarshal(raw, &clients); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	grpcServer := grpc.NewServer()
	authv3.RegisterAuthorizationServer(grpcServer, &server{clients: clients})
	healthpb.RegisterHealthServer(grpcServer, health.NewServer())
	// The bench reads the port from this line.
	fmt.Printf("go-authz listening %d\n", listener.Addr().(*net.TCPAddr).Port)
	if err := grpcServer.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
