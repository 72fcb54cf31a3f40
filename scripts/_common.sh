# Shared by scripts/start.sh and scripts/test.sh: a virtualenv with the pinned
# requirements, and the local services they need.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# setup_venv FILE: create .venv (Python 3.11+) and install FILE when it changed.
setup_venv() {
    local requirements="$1"
    if [ ! -x "$PY" ]; then
        local python=""
        for candidate in python3.13 python3.12 python3.11 python3; do
            if command -v "$candidate" >/dev/null 2>&1 &&
                "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
                python="$candidate"
                break
            fi
        done
        [ -n "$python" ] || die "Python 3.11 or newer is needed (e.g. 'apt-get install python3 python3-venv')."
        say "Creating $VENV with $($python --version)"
        "$python" -m venv "$VENV" || die "could not create a virtualenv: install python3-venv (apt-get install python3-venv)"
    fi
    local stamp="$VENV/.installed-$(basename "$requirements")"
    local digest
    digest="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        say "Installing $requirements"
        "$PY" -m pip install --quiet --upgrade pip
        "$PY" -m pip install --quiet -r "$requirements"
        echo "$digest" > "$stamp"
    fi
}

# redis_url_port URL: the port of a redis:// URL (6379 when absent).
redis_port() { "$PY" -c 'import sys, urllib.parse as u; print(u.urlparse(sys.argv[1]).port or 6379)' "$1"; }
redis_host() { "$PY" -c 'import sys, urllib.parse as u; print(u.urlparse(sys.argv[1]).hostname or "127.0.0.1")' "$1"; }
# redis_db URL: the database number of a redis:// URL (0 when absent).
redis_db() { "$PY" -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]).path.strip("/"); print(int(p) if p.isdigit() else 0)' "$1"; }

redis_ping() {
    "$PY" - "$1" <<'PY' >/dev/null 2>&1
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1, socket_timeout=2).ping()
PY
}

# ensure_redis URL [persist]: start a local redis-server if none answers.
ensure_redis() {
    local url="$1" persist="${2:-no}"
    redis_ping "$url" && return 0
    local host port
    host="$(redis_host "$url")"
    port="$(redis_port "$url")"
    case "$host" in 127.0.0.1|localhost|::1) ;; *) die "Redis at $url does not answer (it is not local, so it is not started here)." ;; esac
    if ! command -v redis-server >/dev/null 2>&1; then
        die "Redis is not running on port $port and redis-server is not installed.
  Debian/Ubuntu: sudo apt-get install redis-server     macOS: brew install redis
  or with Docker: docker compose up -d redis"
    fi
    mkdir -p "$ROOT/var/redis"
    say "Starting redis-server on 127.0.0.1:$port"
    if [ "$persist" = yes ]; then
        redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$ROOT/var/redis" \
            --appendonly yes --save "" --logfile "$ROOT/var/redis/redis.log"
    else
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no \
            --dir "$ROOT/var/redis" --logfile "$ROOT/var/redis/redis.log"
    fi
    for _ in $(seq 50); do redis_ping "$url" && return 0; sleep 0.1; done
    die "redis-server did not come up; see var/redis/redis.log"
}

# ensure_chromium: the browser tests drive Debian's chromium package through Playwright. It is
# installed here when missing and running as root (as CI does); anyone else is told what to install.
CHROMIUM=/usr/bin/chromium
ensure_chromium() {
    [ -x "$CHROMIUM" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        die "the browser tests need Chromium at $CHROMIUM.
  Debian/Ubuntu: sudo apt-get install chromium"
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "the browser tests need Chromium at $CHROMIUM; install it with your system's package manager."
    say "Installing chromium (for the browser tests)"
    mkdir -p "$ROOT/var"
    local log="$ROOT/var/apt-chromium.log"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "could not install chromium (the whole output is in $log)"
    fi
    [ -x "$CHROMIUM" ] || die "the chromium package is installed but there is no $CHROMIUM"
}
