#!/usr/bin/env bash
# Schemathesis against the product's own OpenAPI schema, served by a real
# gunicorn: no server error, responses conform to the schema (status codes and
# content types), invalid data is rejected, and auth is not ignored.
# Run by scripts/test.sh; standalone: bash scripts/fuzz_api.sh [extra schemathesis options]
# A request may take up to 60 s: a token request hashes its password (PBKDF2, half a second of
# CPU), and on a machine busy with the whole test command one took more than 20 s.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

PORT="${FUZZ_PORT:-8765}"
mkdir -p "$ROOT/var"
export DEBUG=true SECRET_KEY=fuzz LOG_LEVEL=WARNING
export DATABASE_URL="sqlite:///$ROOT/var/fuzz.sqlite3"
export REDIS_URL="${FUZZ_REDIS_URL:-redis://127.0.0.1:6379/11}"
export JOBS_API_WRITE_RATE="100000/min"
rm -f "$ROOT"/var/fuzz.sqlite3*
ensure_redis "$REDIS_URL"
"$PY" -c 'import sys, redis; redis.Redis.from_url(sys.argv[1]).flushdb()' "$REDIS_URL"

"$PY" manage.py migrate --no-input -v 0
TOKEN="$("$PY" manage.py shell -v 0 -c '
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
user = User.objects.create_superuser("fuzz", "fuzz@example.com", "fuzz-password")
print(Token.objects.create(user=user).key)
')"

"$VENV/bin/gunicorn" queueproject.asgi:application -k queueproject.web_worker.UvicornWorker \
    --bind "127.0.0.1:$PORT" --workers 2 --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/api/schema/" -H "Authorization: Token $TOKEN" && break
    sleep 0.2
done

"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/api/schema/" \
    --header "Authorization: Token $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,negative_data_rejection,ignored_auth \
    --max-examples "${FUZZ_EXAMPLES:-40}" --request-timeout 60 --seed 1 --generation-deterministic "$@"
