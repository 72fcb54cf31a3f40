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
# The schema is fetched here, once the server answers, and schemathesis reads the file: loading it
# itself, schemathesis gives up after 10 s, and a busy machine (the test command's other steps
# start at the same moment) took longer to build the schema once.
SCHEMA="$ROOT/var/fuzz-schema.json"
rm -f "$SCHEMA"
for _ in $(seq 300); do
    curl -fs --max-time 60 -o "$SCHEMA" "http://127.0.0.1:$PORT/api/schema/?format=json" \
        -H "Authorization: Token $TOKEN" && break
    sleep 0.2
done
[ -s "$SCHEMA" ] || die "the API's schema could not be fetched from the server"

"$VENV/bin/schemathesis" run "$SCHEMA" --url "http://127.0.0.1:$PORT" \
    --header "Authorization: Token $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,negative_data_rejection,ignored_auth \
    --max-examples "${FUZZ_EXAMPLES:-40}" --request-timeout 60 --seed 1 --generation-deterministic "$@"
