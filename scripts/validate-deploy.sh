#!/usr/bin/env bash
# Validates the deployment artefacts under deploy/ without a container engine, a
# cluster or a running systemd. Run from anywhere; safe to run again.
#
#   scripts/validate-deploy.sh [METRICS_FILE]
#
#   METRICS_FILE         /metrics output of a running tether, linted with
#                        `promtool check metrics` and used as the list of exported names.
#   TETHER_METRICS_URL   fetched with curl when no METRICS_FILE is given.
#   TETHER_BIN           the tether binary for the live checks (default: the newer of
#                        target/debug/tether and target/release/tether; never built here).
#   STRICT_METRICS=1     fail, instead of noting, when a rule or panel uses a metric that
#                        no metrics sample contains.
#
# Checks: YAML and Kubernetes objects (plus `kubectl kustomize` when kubectl exists),
# the config checksum annotation, the PodDisruptionBudget, the geoipupdate CronJob,
# the PrometheusRule (generated from alerts.yml, must match it), promtool (rules, rule
# unit tests for every alert, config, metrics), runbook_url anchors, metric names in
# alerts and the Grafana dashboard, the dashboard's provisioning form (a datasource
# variable, no import-only inputs), PromQL syntax of the dashboard,
# systemd-analyze verify and an offline security score, a Dockerfile lint, and, with a
# tether binary, the shipped configurations started for real (check-config, lookup,
# run, /readyz, /metrics, admin API, SIGHUP reload, SIGTERM drain).
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
skipped=0
WORK=$(mktemp -d)
cleanup() {
  rm -rf "$WORK"
}
trap cleanup EXIT

# check NAME COMMAND...: runs the command, prints ok or FAIL with its output.
check() {
  local name=$1
  shift
  local log="$WORK/check.log" rc
  # A subshell with errexit of its own: in an `if`, bash would ignore set -e inside
  # the checked function.
  set +e
  (
    set -e
    "$@"
  ) >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf 'ok    %s\n' "$name"
    sed 's/^/      /' "$log" | grep -E '^ +(note|info):' || true
  else
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$log"
  fi
}
skip() {
  skipped=$((skipped + 1))
  printf 'skip  %s: %s\n' "$1" "$2"
}

# ---- tools --------------------------------------------------------------------------
if ! command -v python3 >/dev/null; then
  echo "python3 is needed" >&2
  exit 1
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check pyyaml
fi
if ! python3 -c 'import tomllib' 2>/dev/null && ! python3 -c 'import tomli' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check tomli
fi
if ! command -v promtool >/dev/null; then
  # Debian bookworm's prometheus package ships /usr/bin/promtool.
  echo "installing promtool (Debian package prometheus)"
  start=$(date +%s)
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  echo "promtool installed in $(($(date +%s) - start)) s"
fi
promtool --version 2>&1 | head -1

# ---- metrics samples ----------------------------------------------------------------
SAMPLES=()
if [ $# -ge 1 ] && [ -n "$1" ]; then
  if [ ! -r "$1" ]; then
    echo "metrics file $1 is not readable" >&2
    exit 1
  fi
  SAMPLES+=("$1")
elif [ -n "${TETHER_METRICS_URL:-}" ]; then
  curl -fsS --max-time 10 "$TETHER_METRICS_URL" >"$WORK/metrics-url.txt"
  SAMPLES+=("$WORK/metrics-url.txt")
fi

# ---- tether binary (live checks) ----------------------------------------------------
TETHER=${TETHER_BIN:-}
if [ -z "$TETHER" ]; then
  for b in target/debug/tether target/release/tether; do
    if [ -x "$b" ] && { [ -z "$TETHER" ] || [ "$b" -nt "$TETHER" ]; }; then
      TETHER=$b
    fi
  done
fi

# Materializes a shipped tether.toml in a temp dir: secrets generated, GeoIP paths
# pointed at the fixture databases, listeners on loopback port 0.
# materialize NAME SOURCE(k8s|systemd)
materialize() {
  local dir="$WORK/$1"
  mkdir -p "$dir/secrets"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=tether.test -addext subjectAltName=DNS:tether.test \
    -keyout "$dir/secrets/tls.key" -out "$dir/secrets/tls.crt" 2>/dev/null
  openssl rand -hex 32 >"$dir/secrets/session.key"
  openssl rand -hex 24 >"$dir/secrets/admin.token"
  openssl rand -hex 24 >"$dir/secrets/client.secret"
  # The shipped store's Redis is not reachable here: tether starts degraded (it
  # connects lazily), which the live checks exercise as well.
  openssl rand -hex 24 >"$dir/secrets/redis.password"
  DIR=$dir SOURCE=$2 python3 - <<'PY'
import os, re, yaml
d, source = os.environ["DIR"], os.environ["SOURCE"]
fixtures = os.path.join(os.getcwd(), "GeoLite-fixtures") + "/"
def localize(text):
    text = text.replace("/var/lib/tether/geoip/", fixtures)
    # Listeners on loopback, port 0: the only lines rewritten besides paths.
    text, n = re.subn(r'(?m)^addr = "[^"]*"', 'addr = "127.0.0.1:0"', text)
    assert n == 2, f"expected listen.addr and admin.addr, found {n} addr lines"
    return text
if source == "k8s":
    # Laid out as the kubelet lays out a ConfigMap volume: the files live in a
    # timestamped directory, ..data points at it, and each key is a symlink through
    # ..data. An update writes a new directory and renames a new ..data over the old.
    data = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))["data"]
    data["tether.toml"] = localize(data["tether.toml"].replace("/etc/tether-secrets/", d + "/secrets/"))
    cfg = os.path.join(d, "config")
    os.makedirs(os.path.join(cfg, "..v1"))
    for name, body in data.items():
        open(os.path.join(cfg, "..v1", name), "w").write(body)
        os.symlink(os.path.join("..data", name), os.path.join(cfg, name))
    os.symlink("..v1", os.path.join(cfg, "..data"))
else:
    text = open("deploy/systemd/tether.toml").read().replace("/run/credentials/tether.service/", d + "/secrets/")
    os.makedirs(os.path.join(d, "config"))
    open(os.path.join(d, "config", "tether.toml"), "w").write(localize(text))
PY
}

# wait_metric ADMIN FILE LINE: polls /metrics (up to 5 s) until LINE appears.
wait_metric() {
  for _ in $(seq 1 50); do
    curl -fsS --max-time 5 "http://$1/metrics" >"$2"
    grep -qxF "$3" "$2" && return 0
    sleep 0.1
  done
  echo "after 5 s, /metrics has no line: $3"
  grep -E '^tether_config_(generation|reloads_total)' "$2"
  return 1
}

# live NAME: starts tether on the materialized config and exercises it (run by
# `check`, in a subshell: its own EXIT trap stops the tether it started).
live() {
  local dir="$WORK/$1" out pid admin token
  out="$dir/tether.log"
  NO_COLOR=1 TETHER_LOG=info "$TETHER" run --config "$dir/config/tether.toml" >"$dir/stdout.log" 2>"$out" &
  pid=$!
  # shellcheck disable=SC2064
  trap "kill -TERM $pid 2>/dev/null || true" EXIT
  admin=
  for _ in $(seq 1 100); do
    admin=$(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -o 'admin_addr=[0-9.:]*' | head -1 | cut -d= -f2 || true)
    [ -n "$admin" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$admin" ]; then
    echo "tether did not start:"
    cat "$out"
    return 1
  fi
  echo "info: admin listener $admin"
  curl -fsS --max-time 5 "http://$admin/healthz" >/dev/null
  curl -fsS --max-time 5 "http://$admin/readyz" >/dev/null
  curl -fsS --max-time 5 "http://$admin/metrics" >"$dir/metrics.txt"
  grep -q '^tether_intel_database_build_timestamp_seconds{database="asn"}' "$dir/metrics.txt"
  token=$(cat "$dir/secrets/admin.token")
  curl -fsS --max-time 5 -H "Authorization: Bearer $token" "http://$admin/api/policy" >"$dir/policy.json"
  python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); assert p["mode"]=="monitor", p["mode"]' "$dir/policy.json"
  # Without the token the API refuses.
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$admin/api/policy")" = 401 ]
  # A changed file reloads by itself: for the ConfigMap, the kubelet's ..data swap
  # (an IoC added); for the unit's config, an edit in place.
  if [ -d "$dir/config/..v1" ]; then
    cp -a "$dir/config/..v1" "$dir/config/..v2"
    echo "203.0.113.200" >>"$dir/config/..v2/iocs.txt"
    ln -s ..v2 "$dir/config/..data_tmp"
    mv -T "$dir/config/..data_tmp" "$dir/config/..data"
    echo "info: ConfigMap-style ..data symlink swap"
  else
    echo "# edited" >>"$dir/config/tether.toml"
    echo "info: config file edited in place"
  fi
  wait_metric "$admin" "$dir/metrics-reloaded.txt" 'tether_config_reloads_total{result="success"} 1'
  grep -qxF 'tether_config_generation 2' "$dir/metrics-reloaded.txt"
  # SIGHUP (systemd's ExecReload) reloads on demand.
  kill -HUP "$pid"
  wait_metric "$admin" "$dir/metrics-reloaded.txt" 'tether_config_reloads_total{result="success"} 2'
  grep -qxF 'tether_config_generation 3' "$dir/metrics-reloaded.txt"
  # SIGTERM drains and exits (idle: at once; the unit and the pod allow 45 s).
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "tether still running 10 s after SIGTERM"
    return 1
  fi
  wait "$pid"
  trap - EXIT
}

if [ -z "$TETHER" ]; then
  skip "live configuration checks" "no tether binary (set TETHER_BIN or build target/debug/tether first)"
elif ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
  skip "live configuration checks" "openssl and curl are needed"
else
  echo "tether binary: $TETHER"
  for cfg in k8s systemd; do
    case $cfg in
      k8s) what="deploy/kubernetes/configmap.yaml tether.toml" ;;
      systemd) what="deploy/systemd/tether.toml" ;;
    esac
    materialize "$cfg" "$cfg"
    check "$what: tether check-config" "$TETHER" check-config "$WORK/$cfg/config/tether.toml"
    check "$what: tether lookup loads the databases and lists" "$TETHER" lookup --config "$WORK/$cfg/config/tether.toml" 192.0.2.1
    check "$what: tether run, probes, metrics, admin API, reload on file change and SIGHUP, SIGTERM" live "$cfg"
  done
  if [ -s "$WORK/k8s/metrics.txt" ]; then
    SAMPLES+=("$WORK/k8s/metrics.txt")
  fi
fi

# ---- promtool -----------------------------------------------------------------------
check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts_test.yml" promtool test rules deploy/prometheus/alerts_test.yml
check "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
# The PrometheusRule is generated from alerts.yml; a hand edit or a stale copy fails.
prometheusrule_in_sync() {
  python3 scripts/prometheusrule.py >"$WORK/prometheusrule.yaml"
  diff -u deploy/kubernetes/prometheusrule.yaml "$WORK/prometheusrule.yaml" || {
    echo "regenerate: scripts/prometheusrule.py > deploy/kubernetes/prometheusrule.yaml"
    return 1
  }
}
check "deploy/kubernetes/prometheusrule.yaml is alerts.yml (scripts/prometheusrule.py)" prometheusrule_in_sync
if [ ${#SAMPLES[@]} -eq 0 ]; then
  skip "promtool check metrics" "no metrics sample (pass a file, set TETHER_METRICS_URL, or provide a tether binary)"
fi
for s in "${SAMPLES[@]}"; do
  # shellcheck disable=SC2016 # $1 is expanded by that sh
  check "promtool check metrics ($s)" sh -c 'promtool check metrics < "$1"' _ "$s"
done

# ---- YAML, Kubernetes objects, metric names, dashboard ------------------------------
structure() {
  SAMPLES_LIST=$(printf '%s\n' "${SAMPLES[@]}") WORK=$WORK python3 - <<'PY'
import glob, hashlib, json, os, re, sys, yaml
try:
    import tomllib
except ImportError:
    import tomli as tomllib

problems = []
def problem(msg):
    problems.append(msg)

# Every YAML file parses; every Kubernetes object is named.
objects = []
for path in sorted(glob.glob("deploy/kubernetes/*.y*ml") + glob.glob("deploy/prometheus/*.y*ml")):
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        problem(f"{path}: {e}")
        continue
    if path.startswith("deploy/kubernetes/"):
        for d in docs:
            if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind"):
                problem(f"{path}: a document without apiVersion/kind")
                continue
            if d["kind"] == "Kustomization":
                continue
            if not (d.get("metadata") or {}).get("name"):
                problem(f"{path}: {d['kind']} without metadata.name")
            objects.append((path, d))

def find(kind, name=None):
    for _, o in objects:
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name):
            return o
    problem(f"no {kind} {name or ''} in deploy/kubernetes")
    return {}

# kustomization.yaml lists exactly the manifests beside it.
kust = yaml.safe_load(open("deploy/kubernetes/kustomization.yaml"))
listed = set(kust.get("resources", []))
present = {os.path.basename(p) for p in glob.glob("deploy/kubernetes/*.y*ml")} - {"kustomization.yaml"}
if listed != present:
    problem(f"kustomization.yaml resources {sorted(listed)} != files {sorted(present)}")

cm = find("ConfigMap")
dep = find("Deployment", "tether")
toml = tomllib.loads(cm.get("data", {}).get("tether.toml", ""))
pod = dep.get("spec", {}).get("template", {})
spec = pod.get("spec", {})
containers = spec.get("containers", [{}])
c = containers[0]

# Config checksum annotation == sha256 of configmap.yaml.
want = hashlib.sha256(open("deploy/kubernetes/configmap.yaml", "rb").read()).hexdigest()
got = pod.get("metadata", {}).get("annotations", {}).get("checksum/config")
if got != want:
    problem(f"deployment.yaml checksum/config is {got}, configmap.yaml hashes to {want}: "
            f"sed -i 's/checksum\\/config: .*/checksum\\/config: \"{want}\"/' deploy/kubernetes/deployment.yaml")

# Pod and container hardening.
if dep.get("spec", {}).get("replicas") != 2:
    problem("deployment: replicas is not 2")
psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
for key, val in [("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)]:
    if csc.get(key, psc.get(key)) != val:
        problem(f"deployment: securityContext.{key} is not {val}")
if csc.get("capabilities", {}).get("drop") != ["ALL"]:
    problem("deployment: capabilities.drop is not [ALL]")
if (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
    problem("deployment: seccompProfile is not RuntimeDefault")
if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
    problem("deployment: resources need requests and limits")

# Ports, probes and the config they must agree with.
ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
def port_of(addr):
    return int(addr.rsplit(":", 1)[1])
if ports.get("proxy") != port_of(toml["listen"]["addr"]):
    problem(f"deployment: port proxy {ports.get('proxy')} != listen.addr {toml['listen']['addr']}")
if ports.get("admin") != port_of(toml["admin"]["addr"]) or not toml["admin"]["addr"].startswith("0.0.0.0:"):
    problem(f"deployment: port admin {ports.get('admin')} vs admin.addr {toml['admin']['addr']} (must bind 0.0.0.0 in the pod)")
for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
    g = c.get(probe, {}).get("httpGet", {})
    if g.get("path") != path or g.get("port") not in ("admin", ports.get("admin")):
        problem(f"deployment: {probe} is not GET {path} on the admin port")
if toml.get("policy", {}).get("mode") != "monitor":
    problem("configmap: policy.mode is not \"monitor\" (the first rollout)")
if toml.get("audit", {}).get("path") != "-":
    problem("configmap: audit.path is not \"-\"")
drain = toml.get("limits", {}).get("drain_timeout", "30s")
drain_s = int(re.fullmatch(r"(\d+)s", drain).group(1)) if isinstance(drain, str) else int(drain)
grace = spec.get("terminationGracePeriodSeconds", 30)
pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
if grace <= drain_s + pre_stop:
    problem(f"deployment: terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain_timeout {drain_s}")

# Every file path in the config lies under a mounted volume; volumes exist.
mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
volumes = {v["name"]: v for v in spec.get("volumes", [])}
for name in mounts.values():
    if name not in volumes:
        problem(f"deployment: volumeMount {name} has no volume")
cm_vol = [v for v in volumes.values() if v.get("configMap", {}).get("name") == cm.get("metadata", {}).get("name")]
if not cm_vol or mounts.get("/etc/tether") != cm_vol[0]["name"]:
    problem("deployment: the ConfigMap is not mounted at /etc/tether")
if c.get("args", [])[-1:] != ["/etc/tether/tether.toml"]:
    problem("deployment: tether is not started on /etc/tether/tether.toml")
def walk(v, key=""):
    if isinstance(v, dict):
        for k, x in v.items():
            yield from walk(x, f"{key}.{k}" if key else k)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from walk(x, f"{key}[{i}]")
    elif isinstance(v, str) and v.startswith("/"):
        yield key, v
projected = {}
for v in volumes.values():
    for src in v.get("projected", {}).get("sources", []):
        for item in src.get("secret", {}).get("items", []):
            projected.setdefault(v["name"], set()).add(item["path"])
for key, path in walk(toml):
    mount = max((m for m in mounts if path.startswith(m.rstrip("/") + "/")), key=len, default=None)
    if mount is None:
        problem(f"configmap: {key} = {path} is on no mounted volume")
        continue
    vol = mounts[mount]
    rel = path[len(mount.rstrip("/")) + 1:]
    if vol in projected and rel not in projected[vol]:
        problem(f"configmap: {key} = {path}: the {vol} volume projects no {rel}")
    if cm_vol and vol == cm_vol[0]["name"] and rel not in cm.get("data", {}):
        problem(f"configmap: {key} = {path}: no such key in the ConfigMap")

# Services, ServiceMonitor, NetworkPolicy.
svc, admin_svc = find("Service", "tether"), find("Service", "tether-admin")
sp = {p["name"]: p for p in svc.get("spec", {}).get("ports", [])}
if not any(p["port"] == 443 and p.get("targetPort") in ("proxy", 8443) for p in sp.values()):
    problem("service.yaml: no 443 -> proxy port")
if admin_svc.get("spec", {}).get("type", "ClusterIP") != "ClusterIP":
    problem("service.yaml: tether-admin is not ClusterIP")
if any(p["port"] == 9090 or p.get("targetPort") in ("admin", 9090) for p in sp.values()):
    problem("service.yaml: the public Service exposes the admin port")
sm = find("ServiceMonitor")
sel = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
if not sel or any(admin_svc.get("metadata", {}).get("labels", {}).get(k) != v for k, v in sel.items()):
    problem("servicemonitor.yaml: the selector does not match tether-admin")
if any(svc.get("metadata", {}).get("labels", {}).get(k) == v for k, v in sel.items()) and \
        all(svc.get("metadata", {}).get("labels", {}).get(k) == v for k, v in sel.items()):
    problem("servicemonitor.yaml: the selector also matches the public Service")
admin_port_names = {p["name"] for p in admin_svc.get("spec", {}).get("ports", [])}
for ep in sm.get("spec", {}).get("endpoints", []):
    if ep.get("port") not in admin_port_names or ep.get("path", "/metrics") != "/metrics":
        problem("servicemonitor.yaml: endpoint is not /metrics on the admin port")
np = find("NetworkPolicy")
for rule in np.get("spec", {}).get("ingress", []):
    if any(p.get("port") in (9090, "admin") for p in rule.get("ports", [])):
        froms = rule.get("from", [])
        if not froms or any(f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") != "monitoring" or "ipBlock" in f for f in froms):
            problem("networkpolicy.yaml: the admin port is open beyond the monitoring namespace")

# PodDisruptionBudget: selects exactly the Deployment's pods, and leaves a drain room
# to evict one (minAvailable below replicas).
pdb = find("PodDisruptionBudget")
pod_labels = pod.get("metadata", {}).get("labels", {})
pdb_sel = pdb.get("spec", {}).get("selector", {}).get("matchLabels", {})
if pdb and pdb.get("apiVersion") != "policy/v1":
    problem("poddisruptionbudget: apiVersion is not policy/v1")
if pdb_sel != dep.get("spec", {}).get("selector", {}).get("matchLabels"):
    problem(f"poddisruptionbudget: selector {pdb_sel} is not the Deployment's selector")
pdb_spec = pdb.get("spec", {})
replicas = dep.get("spec", {}).get("replicas", 1)
if "minAvailable" in pdb_spec:
    if not isinstance(pdb_spec["minAvailable"], int) or not 1 <= pdb_spec["minAvailable"] < replicas:
        problem(f"poddisruptionbudget: minAvailable {pdb_spec['minAvailable']} must be at least 1 and below replicas {replicas}")
elif pdb_spec.get("maxUnavailable") != 1:
    problem("poddisruptionbudget: neither minAvailable nor maxUnavailable: 1")

# PrometheusRule: the rule groups of alerts.yml (the text itself is compared by a
# check of its own), labelled like the other objects.
prule = find("PrometheusRule")
if prule and prule.get("spec", {}).get("groups") != yaml.safe_load(open("deploy/prometheus/alerts.yml"))["groups"]:
    problem("prometheusrule.yaml: its groups differ from deploy/prometheus/alerts.yml")

# geoipupdate CronJob: writes the databases the config reads, into the volume the
# Deployment mounts, once per run, hardened like tether itself.
cron = find("CronJob", "tether-geoipupdate")
cjob = cron.get("spec", {}).get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
gc = (cjob.get("containers") or [{}])[0]
genv = {e["name"]: e.get("value") for e in gc.get("env", [])}
gmounts = {m["name"]: m["mountPath"] for m in gc.get("volumeMounts", [])}
gvols = {v["name"]: v for v in cjob.get("volumes", [])}
dep_geoip = volumes.get(mounts.get("/var/lib/tether/geoip", ""), {}).get("persistentVolumeClaim", {}).get("claimName")
db_dir = genv.get("GEOIPUPDATE_DB_DIR")
gvol = next((n for n, m in gmounts.items() if m == db_dir), None)
if not dep_geoip or gvols.get(gvol, {}).get("persistentVolumeClaim", {}).get("claimName") != dep_geoip:
    problem(f"geoipupdate.yaml: GEOIPUPDATE_DB_DIR {db_dir} is not on the claim the Deployment mounts ({dep_geoip})")
editions = set((genv.get("GEOIPUPDATE_EDITION_IDS") or "").split())
for key in ("asn_db", "city_db", "anonymous_ip_db"):
    path = toml.get("intel", {}).get(key)
    if path and (not path.startswith(f"{db_dir}/") or os.path.basename(path)[: -len(".mmdb")] not in editions):
        problem(f"geoipupdate.yaml: intel.{key} = {path} is not written by it (editions {sorted(editions)}, dir {db_dir})")
if genv.get("GEOIPUPDATE_FREQUENCY") != "0":
    problem("geoipupdate.yaml: GEOIPUPDATE_FREQUENCY must be \"0\" in a CronJob (run once)")
if cron.get("spec", {}).get("concurrencyPolicy") != "Forbid":
    problem("geoipupdate.yaml: concurrencyPolicy is not Forbid")
gsc = gc.get("securityContext", {})
if not (gsc.get("readOnlyRootFilesystem") and gsc.get("allowPrivilegeEscalation") is False
        and gsc.get("capabilities", {}).get("drop") == ["ALL"] and cjob.get("securityContext", {}).get("runAsNonRoot")):
    problem("geoipupdate.yaml: the container is not locked down like tether's")
if not {"GEOIPUPDATE_LICENSE_KEY_FILE", "GEOIPUPDATE_ACCOUNT_ID_FILE"} <= set(genv) or "GEOIPUPDATE_LICENSE_KEY" in genv:
    problem("geoipupdate.yaml: the licence key and account id must come from files (a Secret), not env values")

# The Kubernetes version floor is stated where the preStop sleep is used.
if c.get("lifecycle", {}).get("preStop", {}).get("sleep"):
    for f in ("deploy/kubernetes/deployment.yaml", "deploy/kubernetes/kustomization.yaml", "deploy/README.md"):
        if "1.30" not in open(f).read():
            problem(f"{f}: the preStop sleep needs Kubernetes 1.30+, and this file does not say so")

# Metric names: the README's metrics table, plus whatever the samples export.
readme = open("docs/operations.md").read()
section = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
documented = set()
for line in section.splitlines():
    if line.startswith("| `tether_") or line.startswith("| `process_"):
        documented |= set(re.findall(r"`((?:tether|process)_[a-z0-9_]+)`", line.split("|")[1]))
# Families (# TYPE lines) and series names; the client library leaves out a family
# that has no series yet, so a sample lists what is exported at that moment.
sampled = set()
samples = [s for s in os.environ.get("SAMPLES_LIST", "").splitlines() if s]
for s in samples:
    for line in open(s):
        m = re.match(r"# TYPE (\S+) \S+", line) or re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", line)
        if m:
            sampled.add(m.group(1))
known = documented | sampled
if not documented:
    problem("docs/operations.md: no metrics table found")

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "offset", "bool", "inf", "nan"}
def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        tok = m.group(0)
        rest = e[m.end():].lstrip()
        before = e[m.start() - 1:m.start()]
        if tok in KEYWORDS or rest.startswith("(") or before == "$" or before == "." or before.isalnum():
            continue
        names.add(tok)
    return names
def base(name):
    for suf in ("_bucket", "_sum", "_count"):
        if name.endswith(suf) and name[: -len(suf)] in known:
            return name[: -len(suf)]
    return name

# GitHub-style anchors of deploy/README.md's headings, for the alerts' runbook_url.
def anchor(heading):
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
runbook_anchors = {anchor(l.lstrip("#")) for l in open("deploy/README.md") if l.startswith("#")}

exprs = []
alerts = []
rules = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
for g in rules["groups"]:
    for r in g["rules"]:
        exprs.append((f"alerts.yml {r.get('alert') or r.get('record')}", r["expr"]))
        if "alert" in r:
            if "for" not in r:
                problem(f"alerts.yml {r['alert']}: no `for`")
            if "severity" not in r.get("labels", {}):
                problem(f"alerts.yml {r['alert']}: no severity label")
            missing = {"summary", "description", "runbook_url"} - set(r.get("annotations", {}))
            if missing:
                problem(f"alerts.yml {r['alert']}: annotations lack {sorted(missing)}")
            url = r.get("annotations", {}).get("runbook_url", "")
            if "#" not in url or url.rsplit("#", 1)[1] not in runbook_anchors:
                problem(f"alerts.yml {r['alert']}: runbook_url {url!r} is no heading of deploy/README.md")
            alerts.append(r["alert"])
# Every alert has a promtool unit test in which it fires; TetherDown covers the case of
# no target at all.
tests = yaml.safe_load(open("deploy/prometheus/alerts_test.yml"))
fired = {a["alertname"] for t in tests.get("tests", []) for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
for a in alerts:
    if a not in fired:
        problem(f"alerts_test.yml: no test in which {a} fires")
down = next((r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "TetherDown"), {})
if 'absent(up{job="tether"})' not in down.get("expr", ""):
    problem("alerts.yml TetherDown: does not fire when every target is gone (absent(up{job=\"tether\"}))")

try:
    dash = json.load(open("deploy/grafana/tether-dashboard.json"))
except (OSError, ValueError) as e:
    problem(f"tether-dashboard.json: {e}")
    dash = {"panels": []}
# Provisioning form: Grafana's file provisioning (and the sidecar) loads the JSON as it
# is, without the import dialog that replaces ${DS_...} inputs; a datasource variable
# works both ways.
DS = "${datasource}"
dsvars = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
if [v.get("name") for v in dsvars] != ["datasource"] or dsvars[0].get("query") != "prometheus":
    problem("tether-dashboard.json: needs one datasource variable named datasource (query prometheus)")
if "${DS_" in json.dumps(dash) or dash.get("__inputs"):
    problem("tether-dashboard.json: import-only ${DS_...} inputs do not resolve under file provisioning")
for v in dash.get("templating", {}).get("list", []):
    if v.get("type") == "query" and v.get("datasource", {}).get("uid") != DS:
        problem(f"tether-dashboard.json: variable {v.get('name')} does not use {DS}")
def panel_exprs(metric):
    return [t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", []) if metric in t.get("expr", "")]
for what, metric in [("request latency", "tether_request_duration_seconds_bucket"),
                     ("upstream latency", "tether_upstream_response_duration_seconds_bucket"),
                     ("connections", "tether_connections_open")]:
    if not panel_exprs(metric):
        problem(f"tether-dashboard.json: no {what} panel ({metric})")
dash_exprs = []
for p in dash.get("panels", []):
    for t in p.get("targets", []):
        if t.get("expr"):
            exprs.append((f"dashboard panel {p.get('title')!r}", t["expr"]))
            dash_exprs.append(t["expr"])
    if p.get("type") != "row" and p.get("datasource", {}).get("uid") != DS:
        problem(f"tether-dashboard.json: panel {p.get('title')!r} does not use {DS}")
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != DS:
            problem(f"tether-dashboard.json: a query of panel {p.get('title')!r} does not use {DS}")
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query", {})
    q = q.get("query", "") if isinstance(q, dict) else q
    m = re.match(r"label_values\((.*),\s*\w+\)$", q)
    if m:
        exprs.append((f"dashboard variable {v.get('name')}", m.group(1)))

unsampled = set()
for where, expr in exprs:
    for name in metric_names(expr):
        b = base(name)
        if name == "up":
            continue
        if b not in known:
            problem(f"{where}: metric {name} is neither in README's metrics table nor in a metrics sample")
        elif samples and b not in sampled:
            unsampled.add(b)
if unsampled:
    msg = (f"used but absent from every metrics sample (label sets appear on first use): "
           f"{', '.join(sorted(unsampled))}")
    if os.environ.get("STRICT_METRICS") == "1":
        problem(msg)
    else:
        print("note: " + msg)
if samples:
    undocumented = sorted(n for n in sampled if n.startswith("tether_") and base(n) not in documented)
    if undocumented:
        print("note: exported but not in README's metrics table: " + ", ".join(undocumented))

# The dashboard's PromQL, as recording rules, for promtool to parse.
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*", "$instance": ".*"}
rules_out = {"groups": [{"name": "dashboard", "rules": []}]}
for i, e in enumerate(dash_exprs):
    for k, v in subst.items():
        e = e.replace(k, v)
    rules_out["groups"][0]["rules"].append({"record": f"dashboard:expr{i}", "expr": e})
with open(os.path.join(os.environ["WORK"], "dashboard-rules.yml"), "w") as f:
    yaml.safe_dump(rules_out, f)

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY
}
check "YAML, Kubernetes objects, config/mount/port agreement, metric names" structure
if [ -s "$WORK/dashboard-rules.yml" ]; then
  check "PromQL of every dashboard query (promtool)" promtool check rules "$WORK/dashboard-rules.yml"
fi
if command -v kubectl >/dev/null; then
  check "kubectl kustomize deploy/kubernetes" sh -c 'kubectl kustomize deploy/kubernetes >/dev/null'
else
  skip "kubectl kustomize" "kubectl is not installed"
fi

# ---- systemd ------------------------------------------------------------------------
UNIT=deploy/systemd/tether.service
systemd_structure() {
  local d drain_s stop_s
  # shellcheck disable=SC2016 # $MAINPID is literal unit text
  for d in Type=exec DynamicUser=yes StateDirectory=tether ConfigurationDirectory=tether \
    'ExecStartPre=/usr/local/bin/tether check-config /etc/tether/tether.toml' \
    'ExecStart=/usr/local/bin/tether run --config /etc/tether/tether.toml' \
    'ExecReload=/bin/kill -HUP $MAINPID' KillSignal=SIGTERM Restart=on-failure \
    NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes PrivateDevices=yes \
    ProtectKernelTunables=yes ProtectKernelModules=yes ProtectKernelLogs=yes ProtectControlGroups=yes \
    ProtectClock=yes ProtectHostname=yes 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
    RestrictNamespaces=yes RestrictRealtime=yes RestrictSUIDSGID=yes LockPersonality=yes \
    MemoryDenyWriteExecute=yes SystemCallArchitectures=native SystemCallFilter=@system-service \
    'SystemCallFilter=~@privileged @resources' CapabilityBoundingSet=CAP_NET_BIND_SERVICE \
    AmbientCapabilities=CAP_NET_BIND_SERVICE LimitNOFILE=65536 UMask=0077; do
    grep -qxF "$d" "$UNIT" || { echo "missing: $d"; return 1; }
  done
  drain_s=$(sed -n 's/^drain_timeout = "\([0-9]*\)s".*/\1/p' deploy/systemd/tether.toml)
  stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$UNIT")
  [ -n "$stop_s" ] && [ "$stop_s" -gt "${drain_s:-30}" ] || { echo "TimeoutStopSec ($stop_s) must exceed drain_timeout (${drain_s:-30})"; return 1; }
}
check "$UNIT: directives" systemd_structure
if command -v systemd-analyze >/dev/null; then
  # verify needs the ExecStart binaries to exist, and exits 0 on unknown keys or bad
  # values (it only warns): the unit is checked with /bin/true standing in for tether,
  # and any output fails.
  mkdir -p "$WORK/unit"
  sed -e 's#^\(Exec[A-Za-z]*=\)/usr/local/bin/tether .*#\1/bin/true#' "$UNIT" >"$WORK/unit/tether.service"
  systemd_verify() {
    local out
    out=$(systemd-analyze verify "$WORK/unit/tether.service" 2>&1) || { echo "$out"; return 1; }
    [ -z "$out" ] || { echo "$out"; return 1; }
  }
  check "systemd-analyze verify $UNIT" systemd_verify
  systemd_security() {
    local out
    out=$(systemd-analyze security --offline=true --threshold=20 "$WORK/unit/tether.service" 2>&1) || { echo "$out"; return 1; }
    echo "info: $(echo "$out" | grep 'Overall exposure level' | sed 's/^→ //')"
  }
  check "systemd-analyze security --offline $UNIT (exposure <= 2.0)" systemd_security
else
  skip "systemd-analyze" "not installed"
fi

# ---- Dockerfile ---------------------------------------------------------------------
# No container engine on CI: a structural lint. Build it where docker runs:
#   docker build -f deploy/Dockerfile .
dockerfile_lint() {
  local f=deploy/Dockerfile user
  [ "$(grep -c '^FROM ' "$f")" -ge 2 ] || { echo "not multi-stage"; return 1; }
  grep -q '^FROM rust:.*bookworm AS build' "$f" || { echo "no rust:*-bookworm builder"; return 1; }
  grep -Eq '^FROM (gcr.io/distroless/cc|debian:bookworm-slim)' "$f" || { echo "runtime is not distroless/cc or bookworm-slim"; return 1; }
  grep -q 'cargo build --locked --release' "$f" || { echo "cargo build is not --locked --release"; return 1; }
  grep -q '^COPY --from=build /out/tether /usr/local/bin/tether$' "$f" || { echo "the runtime does not copy only the binary"; return 1; }
  [ "$(grep -c '^COPY ' "$f")" -eq 2 ] || { echo "unexpected COPY lines"; return 1; }
  user=$(sed -n 's/^USER //p' "$f" | tail -1)
  [[ $user =~ ^[0-9]+(:[0-9]+)?$ ]] && [ "${user%%:*}" != 0 ] || { echo "USER '$user' is not a numeric non-root uid"; return 1; }
  grep -qx 'EXPOSE 8443 9090' "$f" || { echo "EXPOSE 8443 9090 missing"; return 1; }
  ! grep -q '^HEALTHCHECK' "$f" || { echo "HEALTHCHECK present"; return 1; }
  grep -qx 'ENTRYPOINT \["/usr/local/bin/tether"\]' "$f" || { echo "ENTRYPOINT"; return 1; }
  grep -qx 'CMD \["run", "--config", "/etc/tether/tether.toml"\]' "$f" || { echo "CMD"; return 1; }
  # Instruction keywords only (continuations and comments aside).
  if grep -vE '^\s*(#|$)' "$f" | grep -vE '^\s' | grep -vE '^(FROM|ARG|WORKDIR|COPY|RUN|EXPOSE|USER|ENTRYPOINT|CMD|ENV|LABEL) ' | grep -q .; then
    grep -vE '^\s*(#|$)' "$f" | grep -vE '^\s' | grep -vE '^(FROM|ARG|WORKDIR|COPY|RUN|EXPOSE|USER|ENTRYPOINT|CMD|ENV|LABEL) '
    return 1
  fi
  grep -qsx 'target' deploy/Dockerfile.dockerignore || { echo "deploy/Dockerfile.dockerignore must exclude target"; return 1; }
}
check "deploy/Dockerfile lint (no engine here: not built)" dockerfile_lint

echo
echo "deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
