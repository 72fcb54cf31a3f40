# One image for every role: the web (the default command), workers (`python manage.py rqworker
# --worker-ttl 60 high default low`), the scheduler (`python manage.py runscheduler`) and the
# one-shot migrations (`python manage.py migrate --no-input`). See docker-compose.yml and
# deploy/kubernetes/.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 1000 app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
# collectstatic needs no secret: DEBUG=true lets the settings load without the production ones.
RUN DEBUG=true python manage.py collectstatic --no-input -v 0 && mkdir -p /app/media && chown -R app /app/media
USER app
EXPOSE 8000
CMD ["gunicorn", "queueproject.asgi:application", "-k", "queueproject.web_worker.UvicornWorker", "--bind", "0.0.0.0:8000", "--workers", "4", "--graceful-timeout", "30"]
