#!/usr/bin/env bash
# The kubectl side of docs/tour.md and docs/kubernetes.md, run on the cluster of `make k8s-up`
# in a namespace of its own, printing each command and what it answered: the outputs quoted in
# the docs come from this. Waits are kubectl's own (`wait`, `rollout status`), with timeouts.
#   hack/k8s/tour-transcript.sh [namespace]     (default: tour; deleted at the end)
set -uo pipefail
cd "$(dirname "$0")/../.."
NS=${1:-tour}
CACHE=${KVSTORE_K8S_CACHE:-$HOME/.cache/kvstore-k8s}
export KUBECONFIG=${KUBECONFIG:-$CACHE/cluster/kubeconfig}
export PATH="$CACHE/v1.34.4/bin:$PWD/.venv/bin:$PATH"
SEL=app.kubernetes.io/name=kvstore

say() { printf '\n$ %s\n' "$*"; "$@" 2>&1; }
quiet() { "$@" >/dev/null 2>&1; }
ready3() { quiet kubectl wait --for=condition=Ready pod/kv-0 pod/kv-1 pod/kv-2 --timeout=240s ||
  { sleep 2; kubectl wait --for=condition=Ready pod/kv-0 pod/kv-1 pod/kv-2 --timeout=240s; }; }
until_ready() { # until_ready POD OLD_UID: the pod re-created (a new uid) and Ready
  for _ in $(seq 1 240); do
    uid=$(kubectl get pod "$1" -o jsonpath='{.metadata.uid}' 2>/dev/null)
    if [ -n "$uid" ] && [ "$uid" != "$2" ] &&
      kubectl wait --for=condition=Ready "pod/$1" --timeout=2s >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "timed out waiting for $1"; kubectl get pods -o wide; kubectl logs "$1" --tail=30
  return 1
}
uid() { kubectl get pod "$1" -o jsonpath='{.metadata.uid}'; }

kubectl create namespace "$NS" >/dev/null
kubectl config set-context --current --namespace="$NS" >/dev/null
trap 'kubectl config set-context --current --namespace=default >/dev/null; kubectl delete namespace "$NS" --wait=false >/dev/null' EXIT
until kubectl get sa default >/dev/null 2>&1; do sleep 0.5; done

echo "## apply"
say kubectl apply -k k8s/overlays/local
for i in 0 1 2; do
  until kubectl get pod "kv-$i" >/dev/null 2>&1; do sleep 0.5; done
  quiet kubectl wait --for=condition=Ready "pod/kv-$i" --timeout=240s
done
say kubectl get pods -l $SEL -o wide
say kubectl get pvc
say kubectl get events --field-selector involvedObject.kind=StatefulSet --sort-by=.metadata.creationTimestamp

echo "## client pod"
say kubectl run kv-client --image=kvstore:0.1.0 --image-pull-policy=IfNotPresent \
  --labels=kvstore/client=true --restart=Never --command -- sleep infinity
quiet kubectl wait --for=condition=Ready pod/kv-client --timeout=120s
say kubectl exec kv-client -- kvstore --url http://kv-write:8080 put greeting hello
say kubectl exec kv-client -- kvstore --url http://kv-read:8080 get greeting

echo "## 1. names"
old=$(uid kv-1)
say kubectl delete pod kv-1
until_ready kv-1 "$old"
say kubectl get pods -l $SEL -o wide
say kubectl exec kv-client -- kvstore --url http://kv-1.kv:8080 status

echo "## 2. volumes"
old=$(uid kv-2)
say kubectl delete pod kv-2 --grace-period=0 --force
until_ready kv-2 "$old"
say kubectl get pvc
say kubectl exec kv-client -- kvstore --url http://kv-2.kv:8080 get greeting
echo; echo "\$ kubectl logs kv-2 | grep 'connected to the manager'"
kubectl logs kv-2 | grep 'connected to the manager'

echo "## 3. dns"
say kubectl get pod kv-0 -o wide
py='import socket, sys; print(socket.gethostbyname(sys.argv[1]))'
say kubectl exec kv-client -- python3 -c "$py" "kv-0.kv.$NS.svc.cluster.local"
old=$(uid kv-0)
say kubectl delete pod kv-0 --grace-period=0 --force
until_ready kv-0 "$old"
say kubectl get pod kv-0 -o wide
new=$(kubectl get pod kv-0 -o jsonpath='{.status.podIP}')
for _ in $(seq 1 60); do # CoreDNS caches an answer for up to 5 s (its Corefile's ttl)
  [ "$(kubectl exec kv-client -- python3 -c "$py" "kv-0.kv.$NS.svc.cluster.local")" = "$new" ] && break
  sleep 1
done
say kubectl exec kv-client -- python3 -c "$py" "kv-0.kv.$NS.svc.cluster.local"
srv='import dns.resolver, sys; [print(a) for a in sorted(r.to_text() for r in dns.resolver.resolve(sys.argv[1], "SRV"))]'
say kubectl exec kv-client -- python3 -c "$srv" "_http._tcp.kv.$NS.svc.cluster.local"
for _ in $(seq 1 60); do kubectl logs kv-1 | grep -q 'reconnected to the manager' && break; sleep 1; done
echo; echo "\$ kubectl logs kv-1 | grep 'reconnected to the manager'"
kubectl logs kv-1 | grep 'reconnected to the manager'
say kubectl exec kv-client -- kvstore --url http://kv-write:8080 put greeting 'hello again'

echo "## 4. ordered deletion and creation"
say kubectl scale statefulset kv --replicas=0
for i in 2 1 0; do quiet kubectl wait --for=delete "pod/kv-$i" --timeout=120s; done
say kubectl scale statefulset kv --replicas=3
for i in 0 1 2; do
  until kubectl get pod "kv-$i" >/dev/null 2>&1; do sleep 0.5; done
  quiet kubectl wait --for=condition=Ready "pod/kv-$i" --timeout=240s
done
say kubectl get events --field-selector involvedObject.kind=StatefulSet --sort-by=.metadata.creationTimestamp

echo "## 5. scale and retention"
say kubectl scale statefulset kv --replicas=1
for i in 2 1; do quiet kubectl wait --for=delete "pod/kv-$i" --timeout=120s; done
say kubectl get pvc
say kubectl scale statefulset kv --replicas=3
for i in 1 2; do
  until kubectl get pod "kv-$i" >/dev/null 2>&1; do sleep 0.5; done
  quiet kubectl wait --for=condition=Ready "pod/kv-$i" --timeout=240s
done
echo; echo "\$ kubectl logs kv-2 | grep 'connected to the manager'"
kubectl logs kv-2 | grep 'connected to the manager'
say kubectl patch statefulset kv --type merge \
  -p '{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenScaled":"Delete"}}}'
say kubectl scale statefulset kv --replicas=1
for i in 2 1; do quiet kubectl wait --for=delete "pod/kv-$i" --timeout=120s; done
for i in 2 1; do quiet kubectl wait --for=delete "pvc/data-kv-$i" --timeout=120s; done
say kubectl get pvc
say kubectl scale statefulset kv --replicas=3
for i in 1 2; do
  until kubectl get pod "kv-$i" >/dev/null 2>&1; do sleep 0.5; done
  quiet kubectl wait --for=condition=Ready "pod/kv-$i" --timeout=240s
done
echo; echo "\$ kubectl logs kv-2 | grep snapshot"
kubectl logs kv-2 | grep snapshot
quiet kubectl patch statefulset kv --type merge \
  -p '{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenScaled":"Retain"}}}'

echo "## 6. partitioned rollout"
say kubectl patch statefulset kv -p '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}'
say kubectl set env statefulset/kv KV_LOG_LEVEL=debug
say kubectl rollout status statefulset/kv --timeout=240s
say kubectl get pods -l $SEL -L controller-revision-hash
say kubectl get statefulset kv -o jsonpath='{.status.currentRevision} {.status.updateRevision}{"\n"}'
say kubectl patch statefulset kv -p '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}'
say kubectl rollout status statefulset/kv --timeout=300s
say kubectl get pods -l $SEL -L controller-revision-hash

echo "## 7. OnDelete"
say kubectl patch statefulset kv --type merge \
  -p '{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}'
say kubectl set env statefulset/kv KV_LOG_LEVEL=warning
say kubectl get pods -l $SEL -L controller-revision-hash
old=$(uid kv-2)
say kubectl delete pod kv-2
until_ready kv-2 "$old"
say kubectl get pods -l $SEL -L controller-revision-hash

echo "## 8. backup"
ip=$(kubectl get pod kv-1 -o jsonpath='{.status.podIP}')
say kvstore backup --url "http://$ip:8080" --out /tmp/kv-tour-backup.db
say kubectl get --raw "/api/v1/namespaces/$NS/pods/kv-1:8080/proxy/readyz"
