#!/usr/bin/env bash
# End-to-end load benchmark, the judge of tether against nginx: each terminates TLS in
# front of the same nginx upstream. In one invocation it measures the upstream alone,
# then nginx and tether, alternating, with one hot session, with a rotating population
# of known sessions, with a new TLS connection per request, and at a fixed rate (70 % of
# nginx's saturation, with oha). Everything listens on 127.0.0.1 only and lives in a
# temporary directory that is removed at exit. See README.md beside this file.
#
#   benches/load/run.sh                     # builds tether (release), then measures
#   TETHER_BIN=target/release/tether benches/load/run.sh
#   QUICK=1 TETHER_BIN=... benches/load/run.sh   # smoke test: short runs, one round
#   STORE=redis benches/load/run.sh         # adds a tether with the shared store on a private redis-server
#
# Knobs (environment): WARMUP=3 DURATION=10 ROUNDS=3 THREADS=2 CONNS=50 SESSIONS=2000
#                      RATE_SHARE=70 OHA=auto|skip STORE=memory KEEP_TMP=1 QUICK=1
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

if [[ -n ${QUICK:-} ]]; then
  WARMUP=${WARMUP:-1}; DURATION=${DURATION:-2}; ROUNDS=${ROUNDS:-1}; SESSIONS=${SESSIONS:-2000}
fi
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-2000}
RATE_SHARE=${RATE_SHARE:-70}
OHA=${OHA:-auto}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
STORE=${STORE:-memory}
WORKERS=$(nproc)
UA='Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'
COOKIE='session=load-test'

for v in WARMUP DURATION ROUNDS THREADS CONNS SESSIONS RATE_SHARE; do
  [[ ${!v} =~ ^[1-9][0-9]{0,5}$ ]] || { echo "error: $v must be a positive integer" >&2; exit 2; }
done
(( THREADS <= 64 && CONNS <= 5000 && SESSIONS <= 1000000 && RATE_SHARE <= 100 )) ||
  { echo "error: THREADS<=64, CONNS<=5000, SESSIONS<=1000000, RATE_SHARE<=100" >&2; exit 2; }
[[ $OHA == auto || $OHA == skip ]] || { echo "error: OHA must be auto or skip" >&2; exit 2; }
(( ROUNDS <= 9 && DURATION <= 120 && WARMUP <= 30 )) || { echo "error: ROUNDS<=9, DURATION<=120, WARMUP<=30" >&2; exit 2; }
[[ $STORE == memory || $STORE == redis ]] || { echo "error: STORE must be memory or redis" >&2; exit 2; }

started=$SECONDS
log() { printf '[%4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

# --- 1. tools ------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[[ $OHA == auto ]] && ! command -v jq >/dev/null 2>&1 && missing+=(jq)
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
# oha holds a fixed request rate (wrk cannot); it comes from crates.io.
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if [[ $OHA == auto ]] && ! command -v oha >/dev/null 2>&1; then
  command -v cargo >/dev/null 2>&1 || { echo "error: oha is missing and cargo is not there to install it (OHA=skip to go without)" >&2; exit 2; }
  log "installing oha with cargo install --locked (a few minutes, once)"
  timeout 1800 cargo install oha --locked >&2
fi

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
# wrk prints its figures through this Lua hook: one line a run, read by `field` below.
REPORT_LUA='
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d status=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.status, e.connect, e.read, e.write, e.timeout))
end'
echo "$REPORT_LUA" >"$TMP/report.lua"
# A rotating population: every thread walks round all SESSIONS cookies (from its own
# starting point), one per request, so the warm-up binds them all and the measured run
# judges known sessions spread over the store's shards. The requests are formatted once
# in init so that wrk's own cost per request stays close to the static runs'.
cat >"$TMP/rotate.lua" <<EOF
local reqs, n, i = {}, 0, 0
local threads = 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end
function init(args)
  n = tonumber(args[1])
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  for k = 1, n do
    headers["Cookie"] = "session=rot-" .. k
    reqs[k] = wrk.format(nil, nil, headers)
  end
  i = (first or 0) * 7919 % n
end
function request()
  i = i % n + 1
  return reqs[i]
end
$REPORT_LUA
EOF

CLK_TCK=$(getconf CLK_TCK)
family() { echo "$1" $(pgrep -P "$1" 2>/dev/null || true); } # a process and its direct children
cpu_ticks() { # total user+system ticks of a process and its direct children (all threads)
  local pid t=0 f
  for pid in $(family "$1"); do
    f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
reset_peak() { # the kernel's peak RSS (VmHWM) restarts from the current RSS
  local pid
  for pid in $(family "$1"); do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
}
peak_kb() { # sum of VmHWM over a process and its direct children
  local pid kb=0 v
  for pid in $(family "$1"); do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    kb=$((kb + ${v:-0}))
  done
  echo "$kb"
}

# Per target: URL, the process whose CPU and memory count, the load (`hot`: one cookie;
# `rot`: rotating cookies; `new`: one cookie, a new connection per request; `none`: no
# cookie; `rate`: oha at a fixed rate), and the row's label.
declare -A URL PID_OF LOAD LABEL
T=https://localhost:$PORT_TETHER/ N=https://localhost:$PORT_NGINX/
URL[upstream]=http://127.0.0.1:$PORT_UP/; PID_OF[upstream]=$PID_UP; LOAD[upstream]=hot
LABEL[upstream]="upstream   direct, plain http"
for k in hot rot new rate; do
  case $k in hot) s=""; d="keep-alive, 1 session" ;; rot) s=_rot; d="keep-alive, $SESSIONS sessions" ;;
             new) s=_new; d="new TLS conn per request" ;; rate) s=_rate; d="fixed rate (oha)" ;; esac
  URL[nginx$s]=$N; PID_OF[nginx$s]=$PID_NGINX; LOAD[nginx$s]=$k; LABEL[nginx$s]="nginx      $d"
  URL[tether$s]=$T; PID_OF[tether$s]=$PID_TETHER; LOAD[tether$s]=$k; LABEL[tether$s]="tether     $d"
done
URL[nocookie]=$T; PID_OF[nocookie]=$PID_TETHER; LOAD[nocookie]=none; LABEL[nocookie]="tether     keep-alive, no cookie"
if [[ $STORE == redis ]]; then
  URL[redis]="https://localhost:$PORT_TETHER_R/"; PID_OF[redis]=$PID_TETHER_R; LOAD[redis]=hot
  LABEL[redis]="tether     keep-alive, 1 session, Redis"
fi
# oha's TLS client has its own JA4: its runs carry a session of their own, so that the
# hot session never sees a second client (which tether would rightly challenge).
RATE_COOKIE='session=rate-test'

declare -A RPS P50 P99 P999 CPU RSS REDIS_CPU
bad=0
SATURATED="" # fixed-rate targets that could not hold the rate in some run
cookie_requests=0 # requests wrk completed towards tether with a cookie (warm-ups included)

wrk_once() { # wrk_once TARGET SECONDS OUTFILE
  local args=(-t"$THREADS" -c"$CONNS" -d"$2s" --latency -H "User-Agent: $UA") tail=()
  case ${LOAD[$1]} in
    hot) args+=(-s "$TMP/report.lua" -H "Cookie: $COOKIE") ;;
    new) args+=(-s "$TMP/report.lua" -H "Cookie: $COOKIE" -H "Connection: close") ;;
    rot) args+=(-s "$TMP/rotate.lua"); tail=(-- "$SESSIONS") ;;
    none) args+=(-s "$TMP/report.lua") ;;
  esac
  timeout $(($2 + 30)) wrk "${args[@]}" "${URL[$1]}" "${tail[@]}" >"$3" 2>&1 || { cat "$3" >&2; echo "error: wrk failed" >&2; exit 1; }
}

oha_once() { # oha_once TARGET SECONDS RATE OUTFILE: fixed-rate keep-alive load, JSON report
  timeout $(($2 + 30)) oha -z "$2s" -q "$3" -c "$CONNS" --latency-correction --no-tui --insecure \
    --output-format json -H "User-Agent: $UA" -H "Cookie: $RATE_COOKIE" "${URL[$1]}" >"$4" 2>"$4.err" ||
    { cat "$4.err" >&2; echo "error: oha failed" >&2; exit 1; }
}

field() { sed -n "s/.*WRKRESULT.* $2=\([0-9]*\).*/\1/p" "$1"; }

check_errors() { # check_errors TARGET FILE
  local n=0 k
  for k in status connect read write timeout; do n=$((n + $(field "$2" "$k"))); done
  if ((n)); then
    bad=$((bad + n))
    echo "!! $1: $(grep -E 'Non-2xx|Socket errors' "$2" | tr -s ' ' | paste -sd';')" >&2
  fi
  if [[ ${PID_OF[$1]} == "$PID_TETHER" && ${LOAD[$1]} != none ]]; then
    cookie_requests=$((cookie_requests + $(field "$2" requests)))
  fi
}

# oha's figures in wrk's units (requests, µs), and its failures: non-2xx answers and
# transport errors (not the requests still in flight when the run's time is up, which
# oha reports as "aborted due to deadline").
oha_fields() { # oha_fields FILE: prints "requests duration_us p50_us p99_us p999_us failures"
  jq -r '[(.statusCodeDistribution | to_entries | map(.value) | add // 0),
          (.summary.total * 1e6 | floor),
          (.latencyPercentiles.p50 * 1e6 | floor), (.latencyPercentiles.p99 * 1e6 | floor),
          (.latencyPercentiles["p99.9"] * 1e6 | floor),
          ((.statusCodeDistribution | to_entries | map(select(.key | startswith("2") | not) | .value) | add // 0)
            + (.errorDistribution | to_entries | map(select(.key != "aborted due to deadline") | .value) | add // 0))] | @tsv' "$1"
}

record_run() { # record_run TARGET REQUESTS DURATION_US P50 P99 P999 CPU_TICKS PEAK_KB
  local rps
  rps=$(awk -v n="$2" -v d="$3" 'BEGIN{printf "%.0f", d ? n / (d / 1e6) : 0}')
  RPS[$1]+="$rps " P50[$1]+="$4 " P99[$1]+="$5 " P999[$1]+="$6 "
  CPU[$1]+="$(awk -v c="$7" -v hz="$CLK_TCK" -v n="$2" 'BEGIN{printf "%.4f", n ? c / hz * 1000 / n : 0}') "
  RSS[$1]+="$8 "
  log "$1 run: $rps req/s, p50 $4 us, p99 $5 us, p99.9 $6 us"
}

measure() { # measure TARGET RUN: warm-up, then one measured run
  local t=$1 r=$2 out=$TMP/wrk-$1-$2.txt c0 c1 rc0 rc1
  wrk_once "$t" "$WARMUP" "$TMP/warmup-$t-$r.txt"
  check_errors "$t" "$TMP/warmup-$t-$r.txt"
  reset_peak "${PID_OF[$t]}"
  c0=$(cpu_ticks "${PID_OF[$t]}")
  [[ $t == redis ]] && rc0=$(cpu_ticks "$PID_REDIS")
  wrk_once "$t" "$DURATION" "$out"
  c1=$(cpu_ticks "${PID_OF[$t]}")
  [[ $t == redis ]] && rc1=$(cpu_ticks "$PID_REDIS")
  check_errors "$t" "$out"
  record_run "$t" "$(field "$out" requests)" "$(field "$out" duration_us)" "$(field "$out" p50_us)" \
    "$(field "$out" p99_us)" "$(field "$out" p999_us)" $((c1 - c0)) "$(peak_kb "${PID_OF[$t]}")"
  [[ $t == redis ]] && REDIS_CPU[$t]+="$(awk -v c=$((rc1 - rc0)) -v hz="$CLK_TCK" -v n="$(field "$out" requests)" 'BEGIN{printf "%.2f", n ? c / hz * 1e6 / n : 0}') "
  return 0
}

measure_rate() { # measure_rate TARGET RUN RATE
  local t=$1 out=$TMP/oha-$1-$2.json c0 c1 f
  oha_once "$t" "$WARMUP" "$3" "$TMP/oha-warmup-$t-$2.json"
  reset_peak "${PID_OF[$t]}"
  c0=$(cpu_ticks "${PID_OF[$t]}")
  oha_once "$t" "$DURATION" "$3" "$out"
  c1=$(cpu_ticks "${PID_OF[$t]}")
  for f in "$TMP/oha-warmup-$t-$2.json" "$out"; do
    read -r -a o <<<"$(oha_fields "$f")"
    if ((o[5])); then
      bad=$((bad + o[5]))
      echo "!! $t: $((o[5])) failed requests at a fixed rate: $(jq -c '{statusCodeDistribution, errorDistribution}' "$f")" >&2
    fi
  done
  read -r -a o <<<"$(oha_fields "$out")"
  # At a rate the box cannot carry, requests queue in oha and the latency is the queue's.
  if ((o[1] > 0 && o[0] * 1000000 / o[1] < $3 * 95 / 100)); then
    echo "!! $t: held $((o[0] * 1000000 / o[1])) req/s of the $3 asked: saturated, its latency is queueing (lower RATE_SHARE)" >&2
    SATURATED+="$t "
  fi
  record_run "$t" "${o[0]}" "${o[1]}" "${o[2]}" "${o[3]}" "${o[4]}" $((c1 - c0)) "$(peak_kb "${PID_OF[$t]}")"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
max() { printf '%s\n' "$@" | sort -g | tail -1; }
med() { local -n arr=$1; local v; read -r -a v <<<"${arr[$2]:-}"; ((${#v[@]})) && median "${v[@]}" || echo 0; }

HAVE_OHA=""
[[ $OHA == auto ]] && command -v oha >/dev/null 2>&1 && HAVE_OHA=yes
runs=$((ROUNDS * 7 + 1)); [[ $STORE == redis ]] && runs=$((runs + ROUNDS)); [[ -n $HAVE_OHA ]] && runs=$((runs + ROUNDS * 2))
log "measuring: $ROUNDS rounds of upstream, then nginx and tether alternating (1 session, $SESSIONS sessions, new connections$([[ -n $HAVE_OHA ]] && echo ", fixed rate"))$([[ $STORE == redis ]] && echo ", tether with Redis"); ~$((runs * (WARMUP + DURATION)))s"
for ((r = 1; r <= ROUNDS; r++)); do
  order=(upstream)
  for s in "" _rot _new; do
    # Alternate which proxy goes first, so neither always follows the other.
    if ((r % 2)); then order+=("tether$s" "nginx$s"); else order+=("nginx$s" "tether$s"); fi
    # With the shared store, its tether runs right after the hot-session pair.
    [[ -z $s && $STORE == redis ]] && order+=(redis)
  done
  for t in "${order[@]}"; do
    measure "$t" "$r"
    # The run without the cookie follows the last round's tether run directly, so the
    # two are compared under the same conditions as far as this box allows.
    if [[ $t == tether ]] && ((r == ROUNDS)); then measure nocookie 1; fi
  done
done
RATE=0
if [[ -n $HAVE_OHA ]]; then
  RATE=$(( $(med RPS nginx) * RATE_SHARE / 100 ))
  log "fixed rate: $RATE req/s ($RATE_SHARE % of nginx's median keep-alive req/s), oha -c$CONNS"
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=(tether_rate nginx_rate); else order=(nginx_rate tether_rate); fi
    for t in "${order[@]}"; do measure_rate "$t" "$r" "$RATE"; done
  done
else
  log "oha not available (OHA=$OHA): no fixed-rate rows"
fi

# --- 8. tether's own account ---------------------------------------------------------
curl -sf --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics" >"$TMP/metrics.txt"
if [[ $STORE == redis ]]; then
  curl -sf --max-time 5 "http://127.0.0.1:$PORT_ADMIN_R/metrics" >"$TMP/metrics-redis.txt"
  timeout 5 redis-cli -h 127.0.0.1 -p "$PORT_REDIS" info commandstats >"$TMP/redis/commandstats.txt" || true
  timeout 5 redis-cli -h 127.0.0.1 -p "$PORT_REDIS" info stats >"$TMP/redis/stats.txt" || true
  timeout 5 redis-cli -h 127.0.0.1 -p "$PORT_REDIS" dbsize >"$TMP/redis/dbsize.txt" || true
fi

# --- report --------------------------------------------------------------------------
ms() { awk -v u="$1" 'BEGIN{printf "%.2f", u / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
wrk_version=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || true)
oha_version=$([[ -n $HAVE_OHA ]] && oha --version 2>/dev/null | head -1 || echo "oha: not used")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

echo
echo "== tether load benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), tether $commit) =="
echo "machine: $(nproc) cores ($cpu_model), $(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); nginx $NGINX_VERSION with $WORKERS workers; $wrk_version; $oha_version"
[[ $STORE == redis ]] && echo "store: $(redis-server --version | awk '{print $1, $2, $3}') on 127.0.0.1, no persistence, same cores; tether [store] defaults (cache_ttl 2s, pool_size 2)"
echo "load: wrk -t$THREADS -c$CONNS, HTTP/1.1 over TLS 1.3, ${WARMUP}s warm-up + ${DURATION}s measured, $ROUNDS runs each,"
echo "      median shown, nginx and tether alternating; body \"ok\\n\" from an nginx upstream"
[[ -n $HAVE_OHA ]] && echo "fixed rate: oha -c$CONNS -q $RATE ($RATE_SHARE % of nginx's median keep-alive req/s), latency corrected for coordinated omission"
echo "NOTE: the load generator, the upstream nginx and the proxy under test all share the same $(nproc) cores;"
echo "      these are relative numbers for this box, not a proxy's capacity on dedicated cores."
echo
row() { printf '%-40s %9s %8s %8s %8s %10s %9s   %s\n' "$@"; }
row "target" "req/s" "p50 ms" "p99 ms" "p99.9 ms" "CPU s/1k" "peak MB" "req/s of each run"
targets=(upstream nginx tether)
[[ $STORE == redis ]] && targets+=(redis)
targets+=(nocookie nginx_rot tether_rot nginx_new tether_new)
[[ -n $HAVE_OHA ]] && targets+=(nginx_rate tether_rate)
for t in "${targets[@]}"; do
  read -r -a rss <<<"${RSS[$t]}"
  row "${LABEL[$t]}" "$(med RPS "$t")" "$(ms "$(med P50 "$t")")" "$(ms "$(med P99 "$t")")" "$(ms "$(med P999 "$t")")" \
    "$(med CPU "$t")" "$(awk -v k="$(max "${rss[@]}")" 'BEGIN{printf "%.1f", k / 1024}')" "${RPS[$t]% }"
done
echo
echo "tether/nginx, same invocation (req/s: above 1 = tether faster; latency, CPU, memory: above 1 = tether slower or bigger)"
printf '  %-34s %7s %7s %7s %7s %7s %7s\n' "" "req/s" "p50" "p99" "p99.9" "CPU" "peak"
pairs=("" _rot _new)
[[ -n $HAVE_OHA ]] && pairs+=(_rate)
for s in "${pairs[@]}"; do
  read -r -a tr <<<"${RSS[tether$s]}"; read -r -a nr <<<"${RSS[nginx$s]}"
  printf '  %-34s %7s %7s %7s %7s %7s %7s\n' "${LABEL[tether$s]#tether     }" \
    "$(ratio "$(med RPS "tether$s")" "$(med RPS "nginx$s")")" "$(ratio "$(med P50 "tether$s")" "$(med P50 "nginx$s")")" \
    "$(ratio "$(med P99 "tether$s")" "$(med P99 "nginx$s")")" "$(ratio "$(med P999 "tether$s")" "$(med P999 "nginx$s")")" \
    "$(ratio "$(med CPU "tether$s")" "$(med CPU "nginx$s")")" "$(ratio "$(max "${tr[@]}")" "$(max "${nr[@]}")")"
done
read -r -a trs <<<"${RPS[tether]}"; read -r -a tcpu <<<"${CPU[tether]}"
awk -v nc="${RPS[nocookie]% }" -v tl="${trs[-1]}" -v ncc="${CPU[nocookie]% }" -v tcl="${tcpu[-1]}" 'BEGIN {
  printf "security path cost (no-cookie run vs the tether run just before it): %.1f%% fewer req/s, %+.1f CPU us/req\n", (1 - tl / nc) * 100, (tcl - ncc) * 1000
}'
[[ -n $SATURATED ]] && echo "!! fixed rate not held by: $SATURATED(see the log above); those latencies measure a queue, not the proxy"
echo "CPU s/1k: user+system CPU seconds of the front process(es) per 1000 requests during the measured run"
echo "          (tether; nginx master+workers; the upstream nginx for the direct row); 0.0300 = 30 us a request"
echo "peak MB: the largest peak RSS (VmHWM, reset before each measured run) over the runs, summed over nginx's processes"
echo "new TLS conn per request: wrk sends Connection: close, so every request pays a full handshake (wrk's OpenSSL"
echo "          client keeps no session cache); its latency columns start after the handshake, its req/s includes it"
if [[ $STORE == redis ]]; then
  printf 'tether Redis/memory store: req/s %s (below 1: Redis slower); p50 %s, p99 %s (above 1: Redis slower)\n' \
    "$(ratio "$(med RPS redis)" "$(med RPS tether)")" "$(ratio "$(med P50 redis)" "$(med P50 tether)")" "$(ratio "$(med P99 redis)" "$(med P99 tether)")"
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
