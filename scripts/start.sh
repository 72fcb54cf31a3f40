#!/usr/bin/env bash
# Set up and run the whole system locally: web (gunicorn, ASGI), worker and
# scheduler, on SQLite and a local Redis. Ctrl+C stops everything gracefully.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

setup_venv requirements.txt

if [ ! -f .env ]; then
    say "Writing .env for local development (edit it to change settings)"
    secret="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(50))')"
    sed -e "s|^SECRET_KEY=.*|SECRET_KEY=$secret|" -e "s|^DEBUG=.*|DEBUG=true|" .env.example > .env
fi
set -a; source .env; set +a

ensure_redis "${REDIS_URL:-redis://127.0.0.1:6379/0}" yes

say "Migrating the database"
"$PY" manage.py migrate --no-input -v 0
"$PY" manage.py collectstatic --no-input -v 0

if ! "$PY" manage.py shell -c 'from django.contrib.auth import get_user_model as g; import sys; sys.exit(0 if g().objects.filter(is_superuser=True).exists() else 1)' 2>/dev/null; then
    say "No admin user yet: create one with  .venv/bin/python manage.py createsuperuser"
fi

say "Starting web (the Jobs page: http://127.0.0.1:${PORT:-8000}/ , the admin: /admin/), worker and scheduler"
export PORT="${PORT:-8000}"
exec "$VENV/bin/honcho" start -f Procfile
