#!/usr/bin/env bash
# Prints a Secret holding a new CA and the controller's serving certificate for the snapshot stream, for
# installs from deploy/tollgate.yaml:   bash deploy/tls-secret.sh | kubectl apply --server-side -f -
# Arguments (all optional): namespace, release name (the Helm release the manifests came from).
set -euo pipefail
namespace="${1:-tollgate}"
service="${2:-tollgate}-controller"
secret="${2:-tollgate}-controller-tls"
days=3650
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

names="DNS:$service,DNS:$service.$namespace,DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=$service-ca" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=$service.$namespace.svc" -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
  "$names" >ext.cnf
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
  -extfile ext.cnf -out tls.crt 2>/dev/null

b64() { base64 -w0 <"$1"; }
cat <<SECRET
apiVersion: v1
kind: Secret
metadata:
  name: $secret
  namespace: $namespace
  labels:
    app.kubernetes.io/name: tollgate
    app.kubernetes.io/component: controller
type: kubernetes.io/tls
data:
  ca.crt: $(b64 ca.crt)
  tls.crt: $(b64 tls.crt)
  tls.key: $(b64 tls.key)
SECRET
