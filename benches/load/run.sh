#!/usr/bin/env bash
# End-to-end load benchmark: tether and nginx, each terminating TLS in front of the same
# nginx upstream, driven by wrk over HTTP/1.1. Everything listens on 127.0.0.1 only and
# lives in a temporary directory that is removed at exit. See README.md beside this file.
#
#   benches/load/run.sh                     # builds tether (release), then measures
#   TETHER_BIN=target/release/tether benches/load/run.sh
#   STORE=redis benches/load/run.sh         # adds a tether with the shared store on a private redis-server
#
# Knobs (environment): WARMUP=3 DURATION=10 ROUNDS=3 THREADS=2 CONNS=50 STORE=memory KEEP_TMP=1
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
STORE=${STORE:-memory}
WORKERS=$(nproc)
UA='Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'
COOKIE='session=load-test'

for v in WARMUP DURATION ROUNDS THREADS CONNS; do
  [[ ${!v} =~ ^[1-9][0-9]{0,3}$ ]] || { echo "error: $v must be a positive integer below 10000" >&2; exit 2; }
done
(( ROUNDS <= 9 && DURATION <= 120 && WARMUP <= 30 )) || { echo "error: ROUNDS<=9, DURATION<=120, WARMUP<=30" >&2; exit 2; }
[[ $STORE == memory || $STORE == redis ]] || { echo "error: STORE must be memory or redis" >&2; exit 2; }

started=$SECONDS
log() { printf '[%4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

# --- 1. tools ------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [[ $STORE == redis ]]; then
  { command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing+=(redis-server)
fi
for t in openssl curl ss; do command -v "$t" >/dev/null 2>&1 || { echo "error: $t is required" >&2; exit 2; }; done
if ((${#missing[@]})); then
  SUDO=()
  if ((EUID != 0)); then command -v sudo >/dev/null 2>&1 && SUDO=(sudo) || { echo "error: need root to install ${missing[*]}" >&2; exit 2; }; fi
  log "installing ${missing[*]} with apt-get"
  timeout 600 "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)

# --- 2. tether -----------------------------------------------------------------------
build_secs=0
if [[ -n ${TETHER_BIN:-} ]]; then
  BIN=$TETHER_BIN
else
  log "cargo build --release --locked"
  b0=$SECONDS
  cargo build --release --locked
  build_secs=$((SECONDS - b0))
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tether
fi
[[ -x $BIN ]] || { echo "error: no tether binary at $BIN" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
bench_start=$SECONDS

# --- temp dir, processes, cleanup ----------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tether-load.XXXXXX")
chmod 755 "$TMP" # nginx workers run unprivileged and need to traverse it
PIDS=()

cleanup() {
  local rc=$? pid kids=() i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    while read -r i; do [[ -n $i ]] && kids+=("$i"); done < <(pgrep -P "$pid" 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}" "${kids[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [[ -n ${KEEP_TMP:-} ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

USED_PORTS=" "
pick_port() { # pick_port VAR: a free loopback TCP port, distinct from those already picked
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 30000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    if [[ -z $(ss -Htln "sport = :$p" 2>/dev/null) ]]; then
      USED_PORTS+="$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  echo "error: no free port found" >&2
  return 1
}

alive() { kill -0 "$1" 2>/dev/null; }

wait_until() { # wait_until PID WHAT CURL_ARGS...: poll (at most 15 s) until curl succeeds
  local pid=$1 what=$2 i
  shift 2
  for ((i = 0; i < 150; i++)); do
    alive "$pid" || { echo "error: $what exited during start-up" >&2; return 1; }
    curl -sf -o /dev/null --max-time 1 "$@" && return 0
    sleep 0.1
  done
  echo "error: $what not ready after 15 s" >&2
  return 1
}

pick_port PORT_UP
pick_port PORT_TETHER
pick_port PORT_ADMIN
pick_port PORT_NGINX
if [[ $STORE == redis ]]; then
  pick_port PORT_REDIS
  pick_port PORT_TETHER_R
  pick_port PORT_ADMIN_R
fi

# --- 3. certificate ------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

NGINX_VERSION=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
# `http2 on;` exists from nginx 1.25.1; older versions take `http2` on the listen line.
if [[ $(printf '%s\n1.25.1\n' "$NGINX_VERSION" | sort -V | head -1) == 1.25.1 ]]; then
  H2_LISTEN="ssl"; H2_DIRECTIVE="http2 on;"
else
  H2_LISTEN="ssl http2"; H2_DIRECTIVE=""
fi

nginx_common() { # nginx_common DIR
  cat <<EOF
worker_processes $WORKERS;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_temp_paths() { # nginx_temp_paths DIR: keep every temp path inside DIR
  local t
  for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $1/$t;"; done
}

start_nginx() { # start_nginx NAME CONF: runs nginx in the foreground of a background job
  local dir=$TMP/$1
  "$NGINX" -t -q -p "$dir" -c "$2" -e "$dir/error.log" || { cat "$dir/error.log" >&2; return 1; }
  "$NGINX" -p "$dir" -c "$2" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
  PIDS+=($!)
}

# --- 4. upstream ---------------------------------------------------------------------
mkdir -p "$TMP/upstream"
{
  nginx_common "$TMP/upstream"
  cat <<EOF
http {
  access_log off;
$(nginx_temp_paths "$TMP/upstream")
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT_UP;
    location / { default_type text/plain; return 200 "ok\n"; }
  }
}
EOF
} >"$TMP/upstream/nginx.conf"
start_nginx upstream "$TMP/upstream/nginx.conf"
PID_UP=${PIDS[-1]}
wait_until "$PID_UP" "upstream nginx" "http://127.0.0.1:$PORT_UP/"

# --- 5. tether -----------------------------------------------------------------------
tether_conf() { # tether_conf PORT ADMIN_PORT AUDIT_FILE: the common configuration
  cat <<EOF
[listen]
addr = "127.0.0.1:$1"
tls_cert = "cert.pem"
tls_key = "key.pem"

[upstream]
url = "http://127.0.0.1:$PORT_UP"

[admin]
addr = "127.0.0.1:$2"

[limits]
drain_timeout = "2s"

[intel]
asn_db = "$ROOT/GeoLite-fixtures/GeoLite2-ASN.mmdb"
city_db = "$ROOT/GeoLite-fixtures/GeoLite2-City.mmdb"
anonymous_ip_db = "$ROOT/GeoLite-fixtures/GeoIP2-Anonymous-IP.mmdb"

[session]
cookies = ["session"]

[policy]
mode = "enforce"

[audit]
path = "$3"
EOF
}
tether_conf "$PORT_TETHER" "$PORT_ADMIN" audit.jsonl >"$TMP/tether.toml"
"$BIN" check-config "$TMP/tether.toml"
"$BIN" run --config "$TMP/tether.toml" >"$TMP/tether.log" 2>&1 &
PID_TETHER=$!
PIDS+=("$PID_TETHER")
wait_until "$PID_TETHER" "tether" "http://127.0.0.1:$PORT_ADMIN/readyz" ||
  { tail -20 "$TMP/tether.log" >&2; exit 1; }

# --- 5b. tether with the shared store (STORE=redis) ----------------------------------
# A private redis-server on loopback, without persistence, in the temp dir; a second
# tether, configured like the first, keeps its sessions there.
if [[ $STORE == redis ]]; then
  mkdir -p "$TMP/redis"
  redis-server --bind 127.0.0.1 --port "$PORT_REDIS" --save '' --appendonly no \
    --dir "$TMP/redis" --logfile "$TMP/redis/redis.log" --daemonize no --protected-mode yes &
  PID_REDIS=$!
  PIDS+=("$PID_REDIS")
  for ((i = 0; ; i++)); do
    alive "$PID_REDIS" || { tail -20 "$TMP/redis/redis.log" >&2; echo "error: redis-server exited during start-up" >&2; exit 1; }
    [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$PORT_REDIS" ping 2>/dev/null) == PONG ]] && break
    ((i < 150)) || { echo "error: redis-server not ready after 15 s" >&2; exit 1; }
    sleep 0.1
  done
  {
    tether_conf "$PORT_TETHER_R" "$PORT_ADMIN_R" audit-redis.jsonl
    cat <<EOF

[store]
backend = "redis"
url = "redis://127.0.0.1:$PORT_REDIS"
EOF
  } >"$TMP/tether-redis.toml"
  "$BIN" check-config "$TMP/tether-redis.toml"
  "$BIN" run --config "$TMP/tether-redis.toml" >"$TMP/tether-redis.log" 2>&1 &
  PID_TETHER_R=$!
  PIDS+=("$PID_TETHER_R")
  wait_until "$PID_TETHER_R" "tether (redis store)" "http://127.0.0.1:$PORT_ADMIN_R/readyz" ||
    { tail -20 "$TMP/tether-redis.log" >&2; exit 1; }
  for ((i = 0; ; i++)); do # readyz names a degraded store; wait (at most 10 s) until it does not
    ready=$(curl -s --max-time 1 "http://127.0.0.1:$PORT_ADMIN_R/readyz" || true)
    [[ $ready == ready* && $ready != *degraded* ]] && break
    ((i < 100)) || { echo "error: tether with the redis store is not ready: $ready" >&2; exit 1; }
    sleep 0.1
  done
fi

# --- 6. nginx as the peer proxy ------------------------------------------------------
mkdir -p "$TMP/peer"
{
  nginx_common "$TMP/peer"
  cat <<EOF
http {
  access_log off;
$(nginx_temp_paths "$TMP/peer")
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  upstream app {
    server 127.0.0.1:$PORT_UP;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$PORT_NGINX $H2_LISTEN;
    $H2_DIRECTIVE
    server_name localhost;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    ssl_protocols TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
EOF
} >"$TMP/peer/nginx.conf"
start_nginx peer "$TMP/peer/nginx.conf"
PID_NGINX=${PIDS[-1]}
wait_until "$PID_NGINX" "peer nginx" -k "https://localhost:$PORT_NGINX/"

# Smoke checks, without the cookie so that no session is bound by curl's TLS client.
smoke=("https://localhost:$PORT_TETHER/" "https://localhost:$PORT_NGINX/")
[[ $STORE == redis ]] && smoke+=("https://localhost:$PORT_TETHER_R/")
for u in "${smoke[@]}"; do
  body=$(curl -sk --max-time 5 --http1.1 -A "$UA" "$u")
  [[ $body == ok ]] || { echo "error: $u answered '$body', expected 'ok'" >&2; exit 1; }
done

# --- 7. load -------------------------------------------------------------------------
cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
EOF

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # total user+system ticks of a process and its direct children
  local pid t=0 f
  for pid in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}

declare -A URL PID_OF COOKIE_OF LABEL
URL[tether]="https://localhost:$PORT_TETHER/";  PID_OF[tether]=$PID_TETHER; COOKIE_OF[tether]=yes
URL[nginx]="https://localhost:$PORT_NGINX/";    PID_OF[nginx]=$PID_NGINX;   COOKIE_OF[nginx]=yes
URL[upstream]="http://127.0.0.1:$PORT_UP/";     PID_OF[upstream]=$PID_UP;   COOKIE_OF[upstream]=yes
URL[nocookie]="https://localhost:$PORT_TETHER/"; PID_OF[nocookie]=$PID_TETHER; COOKIE_OF[nocookie]=no
LABEL[tether]="tether  TLS, session cookie"
LABEL[nginx]="nginx   TLS, proxy_pass"
LABEL[upstream]="upstream direct, plain http"
LABEL[nocookie]="tether  TLS, no cookie"
if [[ $STORE == redis ]]; then
  URL[redis]="https://localhost:$PORT_TETHER_R/"; PID_OF[redis]=$PID_TETHER_R; COOKIE_OF[redis]=yes
  LABEL[redis]="tether  TLS, cookie, Redis"
fi

declare -A RPS P50 P99 CPU REDIS_CPU
bad=0
cookie_requests=0 # requests wrk completed towards tether with the cookie (warm-ups included)

wrk_once() { # wrk_once TARGET SECONDS OUTFILE
  local args=(-t"$THREADS" -c"$CONNS" -d"$2s" --latency -s "$TMP/report.lua" -H "User-Agent: $UA")
  [[ ${COOKIE_OF[$1]} == yes ]] && args+=(-H "Cookie: $COOKIE")
  timeout $(($2 + 30)) wrk "${args[@]}" "${URL[$1]}" >"$3" 2>&1 || { cat "$3" >&2; echo "error: wrk failed" >&2; exit 1; }
}

field() { sed -n "s/.*WRKRESULT.* $2=\([0-9]*\).*/\1/p" "$1"; }

check_errors() { # check_errors TARGET FILE
  local n=0 k
  for k in status connect read write timeout; do n=$((n + $(field "$2" "$k"))); done
  if ((n)); then
    bad=$((bad + n))
    echo "!! $1: $(grep -E 'Non-2xx|Socket errors' "$2" | tr -s ' ' | paste -sd';')" >&2
  fi
  if [[ $1 == tether ]]; then cookie_requests=$((cookie_requests + $(field "$2" requests))); fi
}

measure() { # measure TARGET RUN: warm-up, then one measured run
  local t=$1 r=$2 out=$TMP/wrk-$1-$2.txt c0 c1 req dur
  wrk_once "$t" "$WARMUP" "$TMP/warmup-$t-$r.txt"
  check_errors "$t" "$TMP/warmup-$t-$r.txt"
  c0=$(cpu_ticks "${PID_OF[$t]}")
  [[ $t == redis ]] && rc0=$(cpu_ticks "$PID_REDIS")
  wrk_once "$t" "$DURATION" "$out"
  c1=$(cpu_ticks "${PID_OF[$t]}")
  [[ $t == redis ]] && rc1=$(cpu_ticks "$PID_REDIS")
  check_errors "$t" "$out"
  req=$(field "$out" requests)
  dur=$(field "$out" duration_us)
  RPS[$t]+="$(awk -v n="$req" -v d="$dur" 'BEGIN{printf "%.0f", n / (d / 1e6)}') "
  P50[$t]+="$(field "$out" p50_us) "
  P99[$t]+="$(field "$out" p99_us) "
  CPU[$t]+="$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN{printf "%.1f", n ? c / hz * 1e6 / n : 0}') "
  [[ $t == redis ]] && REDIS_CPU[$t]+="$(awk -v c=$((rc1 - rc0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN{printf "%.2f", n ? c / hz * 1e6 / n : 0}') "
  log "$t run $r: $(awk -v n="$req" -v d="$dur" 'BEGIN{printf "%.0f", n / (d / 1e6)}') req/s, p50 $(field "$out" p50_us) us, p99 $(field "$out" p99_us) us"
}

if [[ $STORE == redis ]]; then
  est=$(((ROUNDS * 4 + 1) * (WARMUP + DURATION)))
  log "measuring: $ROUNDS rounds of tether / tether with Redis / nginx / upstream, and tether without cookie once (~${est}s)"
else
  est=$(((ROUNDS * 3 + 1) * (WARMUP + DURATION)))
  log "measuring: $ROUNDS rounds of tether / nginx / upstream, and tether without cookie once (~${est}s)"
fi
for ((r = 1; r <= ROUNDS; r++)); do
  # Alternate which proxy goes first, so neither always follows the other.
  if ((r % 2)); then order=(tether nginx upstream); else order=(nginx tether upstream); fi
  # With the shared store, its tether runs between the two proxies (second in every round).
  [[ $STORE == redis ]] && order=("${order[0]}" redis "${order[@]:1}")
  for t in "${order[@]}"; do
    measure "$t" "$r"
    # The run without the cookie follows the last round's tether run directly, so the
    # two are compared under the same conditions as far as this box allows.
    if [[ $t == tether ]] && ((r == ROUNDS)); then measure nocookie 1; fi
  done
done

# --- 8. tether's own account ---------------------------------------------------------
curl -sf --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics" >"$TMP/metrics.txt"
if [[ $STORE == redis ]]; then
  curl -sf --max-time 5 "http://127.0.0.1:$PORT_ADMIN_R/metrics" >"$TMP/metrics-redis.txt"
  timeout 5 redis-cli -h 127.0.0.1 -p "$PORT_REDIS" info commandstats >"$TMP/redis/commandstats.txt" || true
  timeout 5 redis-cli -h 127.0.0.1 -p "$PORT_REDIS" info stats >"$TMP/redis/stats.txt" || true
  timeout 5 redis-cli -h 127.0.0.1 -p "$PORT_REDIS" dbsize >"$TMP/redis/dbsize.txt" || true
fi

# --- report --------------------------------------------------------------------------
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
ms() { awk -v u="$1" 'BEGIN{printf "%.2f", u / 1000}'; }

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
wrk_version=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || true)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

echo
echo "== tether load benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), tether $commit) =="
echo "machine: $(nproc) cores ($cpu_model); nginx $NGINX_VERSION with $WORKERS workers; $wrk_version"
[[ $STORE == redis ]] && echo "store: $(redis-server --version | awk '{print $1, $2, $3}') on 127.0.0.1, no persistence, same cores; tether [store] defaults (cache_ttl 2s, pool_size 2)"
echo "load: wrk -t$THREADS -c$CONNS, HTTP/1.1, ${WARMUP}s warm-up + ${DURATION}s measured, $ROUNDS runs each"
echo "      (median shown; tether and nginx alternate), body \"ok\\n\" from an nginx upstream"
echo "NOTE: wrk, the upstream nginx and the proxy under test all share the same $(nproc) cores;"
echo "      these are relative numbers for this box, not a proxy's capacity on dedicated cores."
echo
printf '%-30s %10s %9s %9s %12s   %s\n' "target" "req/s" "p50 ms" "p99 ms" "CPU us/req" "req/s of each run"
targets=(upstream nginx tether nocookie)
[[ $STORE == redis ]] && targets=(upstream nginx tether redis nocookie)
for t in "${targets[@]}"; do
  read -r -a rs <<<"${RPS[$t]}"
  read -r -a a50 <<<"${P50[$t]}"
  read -r -a a99 <<<"${P99[$t]}"
  read -r -a cs <<<"${CPU[$t]}"
  printf '%-30s %10s %9s %9s %12s   %s\n' "${LABEL[$t]}" "$(median "${rs[@]}")" \
    "$(ms "$(median "${a50[@]}")")" "$(ms "$(median "${a99[@]}")")" "$(median "${cs[@]}")" "${rs[*]}"
done
read -r -a trs <<<"${RPS[tether]}"; read -r -a nrs <<<"${RPS[nginx]}"
read -r -a t50 <<<"${P50[tether]}"; read -r -a n50 <<<"${P50[nginx]}"
read -r -a t99 <<<"${P99[tether]}"; read -r -a n99 <<<"${P99[nginx]}"
read -r -a tcpu <<<"${CPU[tether]}"
echo
awk -v t="$(median "${trs[@]}")" -v n="$(median "${nrs[@]}")" \
  -v t5="$(median "${t50[@]}")" -v n5="$(median "${n50[@]}")" \
  -v t9="$(median "${t99[@]}")" -v n9="$(median "${n99[@]}")" \
  -v nc="${RPS[nocookie]% }" -v tl="${trs[-1]}" -v ncc="${CPU[nocookie]% }" -v tcl="${tcpu[-1]}" 'BEGIN {
  printf "tether/nginx: req/s %.2f (above 1: tether faster); p50 %.2f, p99 %.2f (above 1: tether slower)\n", t / n, t5 / n5, t9 / n9
  printf "security path cost (no-cookie run vs the tether run just before it): %.1f%% fewer req/s, %+.1f CPU us/req\n", (1 - tl / nc) * 100, tcl - ncc
}'
echo "CPU us/req: user+system CPU of the front process(es) during the measured run (tether; nginx master+workers; the upstream for the direct row), per request"
if [[ $STORE == redis ]]; then
  read -r -a rrs <<<"${RPS[redis]}"; read -r -a r50 <<<"${P50[redis]}"; read -r -a r99 <<<"${P99[redis]}"
  awk -v t="$(median "${trs[@]}")" -v r="$(median "${rrs[@]}")" \
    -v t5="$(median "${t50[@]}")" -v r5="$(median "${r50[@]}")" \
    -v t9="$(median "${t99[@]}")" -v r9="$(median "${r99[@]}")" 'BEGIN {
    printf "tether Redis/memory store: req/s %.2f (below 1: Redis slower); p50 %.2f, p99 %.2f (above 1: Redis slower)\n", r / t, r5 / t5, r9 / t9
  }'
  read -r -a rcs <<<"${REDIS_CPU[redis]}"
  echo "redis-server CPU us/req during the Redis row's measured runs (not in its CPU column): ${rcs[*]}"
fi

echo
echo "-- tether /metrics after the runs --"
grep '^tether_decisions_total' "$TMP/metrics.txt" || echo "(no tether_decisions_total series)"
grep -E '^tether_requests_total' "$TMP/metrics.txt" || true
grep -E '^tether_signals_total' "$TMP/metrics.txt" | awk '$NF != 0' || true
grep -E '^tether_sessions ' "$TMP/metrics.txt" || true
awk '/^tether_decision_duration_seconds_sum/ {s = $NF} /^tether_decision_duration_seconds_count/ {c = $NF}
  END { if (c > 0) printf "tether_decision_duration_seconds: sum %.4f s / count %d = %.2f us per decision\n", s, c, s / c * 1e6 }' "$TMP/metrics.txt"
echo "wrk completed $cookie_requests requests to tether with the cookie (warm-ups included; decisions also count requests in flight when wrk stopped)"
audit_events() { grep -o '"event":"[a-z_]*"' "$1" 2>/dev/null | sed 's/"event"://; s/"//g' | sort | uniq -c | awk '{print $2 " " $1}' | paste -sd, || true; }
echo "audit log events (session_bound = the one binding; allowed decisions are not audited by default):" \
  "$(audit_events "$TMP/audit.jsonl")"
if [[ $STORE == redis ]]; then
  echo
  echo "-- tether with the Redis store: /metrics after the runs --"
  grep '^tether_decisions_total' "$TMP/metrics-redis.txt" || echo "(no tether_decisions_total series)"
  grep -E '^tether_requests_total' "$TMP/metrics-redis.txt" || true
  grep -E '^tether_signals_total' "$TMP/metrics-redis.txt" | awk '$NF != 0' || true
  grep -E '^tether_store_(degraded|errors)' "$TMP/metrics-redis.txt" || true
  awk '/^tether_decision_duration_seconds_sum/ {s = $NF} /^tether_decision_duration_seconds_count/ {c = $NF}
    END { if (c > 0) printf "tether_decision_duration_seconds: sum %.4f s / count %d = %.2f us per decision\n", s, c, s / c * 1e6 }' "$TMP/metrics-redis.txt"
  echo "audit log events: $(audit_events "$TMP/audit-redis.jsonl")"
  echo "redis: $(sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p' "$TMP/redis/stats.txt") commands processed in all, $(tr -d '[:space:]' <"$TMP/redis/dbsize.txt") keys;" \
    "$(sed -n 's/^cmdstat_\([a-z]*\):calls=\([0-9]*\).*/\1 \2/p' "$TMP/redis/commandstats.txt" | paste -sd, -)"
  awk -v e="$(sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p' "$TMP/redis/commandstats.txt")" \
    '/^tether_decisions_total/ {d += $NF} END { if (e > 0) printf "       %d decisions for %d scripts (EVALSHA): one round trip per %.0f decisions; the rest came from tether'"'"'s cache\n", d, e, d / e }' \
    "$TMP/metrics-redis.txt"
fi

non2xx=$(awk '/^tether_requests_total/ && !/status="2xx"/ {n += $NF} END {print n + 0}' "$TMP/metrics.txt")
if ((non2xx)); then
  echo "!! tether answered $non2xx requests with a status other than 2xx; audit lines that are not allow:"
  grep -v '"action":"allow"' "$TMP/audit.jsonl" 2>/dev/null | grep '"event":"decision"' | head -5 || true
  bad=$((bad + non2xx))
fi
if [[ $STORE == redis ]]; then
  non2xx=$(awk '/^tether_requests_total/ && !/status="2xx"/ {n += $NF} END {print n + 0}' "$TMP/metrics-redis.txt")
  degraded=$(awk '/^tether_store_degraded(_operations)?_total / {n += $NF} END {print n + 0}' "$TMP/metrics-redis.txt")
  if ((non2xx)); then
    echo "!! tether with the Redis store answered $non2xx requests with a status other than 2xx"
    bad=$((bad + non2xx))
  fi
  if ((degraded)); then
    echo "!! tether with the Redis store counted $degraded degraded decisions or store calls"
    bad=$((bad + degraded))
  fi
fi

echo
echo "wall time: $((SECONDS - bench_start)) s for the benchmark, ${build_secs} s for the build"
if ((bad)); then
  echo "FAILED: $bad errors or non-2xx answers (see above)" >&2
  exit 1
fi
echo "errors: none (wrk socket errors and non-2xx/3xx answers are zero for every run; tether answered 2xx only)"
