"""Production settings: what a deployment must set, HTTPS, and `.env.example` as the list of every variable.

The start-up tests run `manage.py` in a child process with a clean environment (no DEBUG or
SECRET_KEY from pytest) and ENV_FILE pointing at a file written from `.env.example`, as a
deployment would fill it in.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.test import override_settings

from jobs import redis_config

pytestmark = pytest.mark.once

BASE_DIR = Path(settings.BASE_DIR)
ENV_EXAMPLE = BASE_DIR / ".env.example"

#: Read by the code but not settings a deployment makes in .env: the path of the .env file itself.
NOT_IN_ENV_FILE = {"ENV_FILE"}
#: Set for the tools around the product (Python, pip, the Postgres image), not read by it.
NOT_THE_PRODUCTS = re.compile(r"^(PYTHON\w*|PIP_\w+|POSTGRES_\w+|PORT|PATH|HOME)$")


def production_values(**changes: str | None) -> dict[str, str]:
    """`.env.example`'s values with the three required ones filled in as its comments say."""
    values = dict(example_assignments())
    values.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="jobs.example.com",
        CSRF_TRUSTED_ORIGINS="https://jobs.example.com",
    )
    for name, value in changes.items():
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def manage(tmp_path: Path, values: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`manage.py *args` with only `values` (through ENV_FILE): nothing inherited from the tests' environment."""
    env_file = tmp_path / "production.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ENV_FILE": str(env_file), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- start-up ----------------------------------------------------------------------------------


def test_check_deploy_is_clean_with_the_production_settings_of_env_example(tmp_path):
    result = manage(tmp_path, production_values(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    # Only the HSTS preload warning is silenced: preloading is a deployment's own decision.
    assert "no issues (1 silenced)" in result.stdout


def test_check_deploy_is_clean_behind_a_proxy_that_terminates_tls(tmp_path):
    values = production_values(TLS_TERMINATED_BY_PROXY="true")
    result = manage(tmp_path, values, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    # Exactly the redirect and HSTS checks, which the proxy answers for, are silenced.
    assert "no issues (2 silenced)" in result.stdout


@pytest.mark.parametrize("proxy", ["false", "true"])
def test_the_https_settings_a_production_process_runs_with(tmp_path, proxy):
    code = (
        "import json; from django.conf import settings as s; print(json.dumps({k: getattr(s, k, None) for k in ["
        "'DEBUG', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', 'SECURE_SSL_REDIRECT',"
        "'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', 'SECURE_PROXY_SSL_HEADER',"
        "'SILENCED_SYSTEM_CHECKS', 'X_FRAME_OPTIONS', 'SECURE_CONTENT_TYPE_NOSNIFF', 'SECURE_REFERRER_POLICY']}))"
    )
    result = manage(tmp_path, production_values(TLS_TERMINATED_BY_PROXY=proxy), "shell", "-v", "0", "-c", code)
    assert result.returncode == 0, result.stderr
    seen = yaml.safe_load(result.stdout.strip().splitlines()[-1])
    assert seen["DEBUG"] is False
    assert seen["SESSION_COOKIE_SECURE"] is seen["CSRF_COOKIE_SECURE"] is seen["SESSION_COOKIE_HTTPONLY"] is True
    assert (seen["X_FRAME_OPTIONS"], seen["SECURE_CONTENT_TYPE_NOSNIFF"]) == ("DENY", True)
    assert seen["SECURE_REFERRER_POLICY"] == "same-origin"
    if proxy == "true":
        assert seen["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
        assert (seen["SECURE_SSL_REDIRECT"], seen["SECURE_HSTS_SECONDS"]) == (False, 0)
        assert set(seen["SILENCED_SYSTEM_CHECKS"]) == {"security.W004", "security.W008", "security.W021"}
    else:
        assert seen["SECURE_PROXY_SSL_HEADER"] is None
        assert seen["SECURE_SSL_REDIRECT"] is True
        assert seen["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
        assert (seen["SECURE_HSTS_INCLUDE_SUBDOMAINS"], seen["SECURE_HSTS_PRELOAD"]) == (True, False)
        assert seen["SILENCED_SYSTEM_CHECKS"] == ["security.W021"]


@pytest.mark.parametrize(
    ("variable", "explains"),
    [
        ("SECRET_KEY", "a long random string"),
        ("ALLOWED_HOSTS", "the host names the site answers to"),
        ("CSRF_TRUSTED_ORIGINS", "https://jobs.example.com"),
    ],
)
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_a_missing_required_setting_stops_start_up_naming_it(tmp_path, variable, explains, how):
    values = production_values(**{variable: None if how == "missing" else ""})
    result = manage(tmp_path, values, "check")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"django.core.exceptions.ImproperlyConfigured: {variable} is required when DEBUG")
    assert explains in last_line
    assert ".env.example" in last_line


def test_a_csrf_origin_without_its_scheme_is_refused(tmp_path):
    result = manage(tmp_path, production_values(CSRF_TRUSTED_ORIGINS="jobs.example.com"), "check")
    assert result.returncode != 0
    assert "CSRF_TRUSTED_ORIGINS takes origins with their scheme" in result.stderr


def test_a_short_secret_key_is_flagged_by_check_deploy(tmp_path):
    result = manage(tmp_path, production_values(SECRET_KEY="too-short"), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W009" in result.stderr


def test_local_runs_need_none_of_the_three(tmp_path):
    """scripts/start.sh's .env: .env.example with DEBUG=true and a secret key; hosts and origins left empty."""
    values = production_values(DEBUG="true", ALLOWED_HOSTS="", CSRF_TRUSTED_ORIGINS="")
    code = (
        "from django.conf import settings as s; print(s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS, s.SECURE_SSL_REDIRECT)"
    )
    result = manage(tmp_path, values, "shell", "-v", "0", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['localhost', '127.0.0.1', '[::1]'] [] False"


def test_start_sh_writes_a_local_env_from_env_example():
    script = (BASE_DIR / "scripts" / "start.sh").read_text()
    assert 'sed -e "s|^SECRET_KEY=.*|SECRET_KEY=$secret|" -e "s|^DEBUG=.*|DEBUG=true|" .env.example > .env' in script


# --- HTTPS in requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_scrapers_are_not_redirected_to_https(client, path):
    with override_settings(SECURE_SSL_REDIRECT=True):
        response = client.get(path)
    assert response.status_code != 301, f"{path} redirected to {response.get('Location')}"


def test_pages_are_redirected_to_https(client):
    with override_settings(SECURE_SSL_REDIRECT=True):
        response = client.get("/jobs/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/jobs/"


def test_behind_a_proxy_the_forwarded_scheme_is_trusted(client):
    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200
        assert client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="http").status_code == 301


# --- Redis settings (no server needed) ----------------------------------------------------------


def test_a_rediss_url_carries_password_tls_and_its_ca_to_django_rq():
    config = redis_config.rq_connection(
        "rediss://app:s%40cret@redis.example.com:6380/3?ssl_ca_certs=/etc/redis/ca.pem", socket_timeout=2.0
    )
    assert (config["HOST"], config["PORT"], config["DB"]) == ("redis.example.com", 6380, 3)
    assert (config["USERNAME"], config["PASSWORD"]) == ("app", "s@cret")
    assert (config["SSL"], config["SSL_CERT_REQS"]) == (True, "required")
    assert config["REDIS_CLIENT_KWARGS"]["ssl_ca_certs"] == "/etc/redis/ca.pem"
    assert config["REDIS_CLIENT_KWARGS"]["socket_timeout"] == 2.0


def test_sentinels_map_to_django_rqs_sentinel_settings():
    config = redis_config.rq_connection(
        "rediss://:master-pw@unused/2",
        socket_timeout=1.5,
        sentinels=redis_config.parse_sentinels("s1.example.com:26379, s2.example.com:26380"),
        master="jobs",
        sentinel_password="sentinel-pw",
    )
    assert config["SENTINELS"] == [("s1.example.com", 26379), ("s2.example.com", 26380)]
    assert (config["MASTER_NAME"], config["DB"], config["PASSWORD"]) == ("jobs", 2, "master-pw")
    assert config["SOCKET_TIMEOUT"] == 1.5
    assert config["CONNECTION_KWARGS"]["ssl"] is True
    assert config["SENTINEL_KWARGS"]["password"] == "sentinel-pw"
    assert config["SENTINEL_KWARGS"]["ssl"] is True
    assert "HOST" not in config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"REDIS_URL": "http://127.0.0.1"}, "REDIS_URL is not a valid Redis URL"),
        ({"REDIS_URL": "redis://127.0.0.1/0?ssl_ca_certs=/ca.pem"}, "not a rediss:// URL"),
        ({"REDIS_URL": "rediss://127.0.0.1/0?ssl_cert_reqs=maybe"}, "ssl_cert_reqs must be one of"),
        ({"REDIS_URL": "redis://127.0.0.1/0?max_connections=3"}, "query may only hold TLS options"),
        ({"REDIS_SENTINELS": "127.0.0.1"}, "REDIS_SENTINELS takes host:port pairs"),
        ({"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": ""}, "REDIS_SENTINEL_MASTER must name"),
    ],
)
def test_a_redis_setting_that_cannot_work_stops_start_up(tmp_path, changes, message):
    result = manage(tmp_path, production_values(**changes), "check")
    assert result.returncode != 0
    assert message in result.stderr.strip().splitlines()[-1]


# --- .env.example lists exactly what the code reads ----------------------------------------------


def example_assignments() -> list[tuple[str, str]]:
    pairs = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            pairs.append((match[1], match[2]))
    return pairs


READS = [
    re.compile(r"""\benv(?:_\w+)?\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""\bos\.(?:environ\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""\bos\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""),
]


def variables_the_code_reads() -> dict[str, str]:
    """Variable -> a file that reads it, over queueproject/ and jobs/."""
    found: dict[str, str] = {}
    for directory in ("queueproject", "jobs"):
        for path in sorted((BASE_DIR / directory).rglob("*.py")):
            text = path.read_text()
            for pattern in READS:
                for name in pattern.findall(text):
                    found.setdefault(name, str(path.relative_to(BASE_DIR)))
    return found


def variables_passed_to_the_product() -> dict[str, str]:
    """Variable -> where: what the Procfile, the Dockerfile, docker-compose.yml and scripts/*.sh set for it."""
    found: dict[str, str] = {}
    assignment = re.compile(r"(?:^|[\s;])(?:export\s+|env\s+)?([A-Z][A-Z0-9_]*)=")
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        _, _, command = line.partition(":")
        for name in assignment.findall(command):
            found.setdefault(name, "Procfile")
    for line in (BASE_DIR / "Dockerfile").read_text().splitlines():
        if line.startswith(("ENV ", "RUN ", "ARG ")):
            for name in assignment.findall(line[4:]):
                found.setdefault(name, "Dockerfile")
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    for service_name, service in (compose.get("services") or {}).items():
        if "build" not in service:
            continue  # an image of its own (Postgres, Redis), not the product
        environment = service.get("environment") or {}
        names = environment if isinstance(environment, dict) else [item.split("=")[0] for item in environment]
        for name in names:
            found.setdefault(name, f"docker-compose.yml ({service_name})")
    for path in sorted((BASE_DIR / "scripts").glob("*.sh")):
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            if not re.search(r"\b(export|env)\s", code):
                continue  # a variable of the script itself, not passed on
            for name in assignment.findall(code):
                found.setdefault(name, f"scripts/{path.name}")
    return {name: where for name, where in found.items() if not NOT_THE_PRODUCTS.match(name)}


def test_every_variable_the_code_reads_is_in_env_example():
    documented = {name for name, _ in example_assignments()}
    missing = {
        name: where
        for name, where in variables_the_code_reads().items()
        if name not in documented and name not in NOT_IN_ENV_FILE
    }
    assert not missing, f"read by the code but not in .env.example: {missing}"


def test_every_variable_the_deployment_files_pass_to_the_product_is_in_env_example():
    documented = {name for name, _ in example_assignments()}
    missing = {name: where for name, where in variables_passed_to_the_product().items() if name not in documented}
    assert not missing, f"passed to the product but not in .env.example: {missing}"


def test_env_example_names_no_variable_the_code_does_not_read():
    read = variables_the_code_reads()
    unread = [name for name, _ in example_assignments() if name not in read]
    assert not unread, f".env.example names variables nothing reads: {unread}"


def test_every_variable_in_env_example_has_a_comment_above_it():
    lines = ENV_EXAMPLE.read_text().splitlines()
    names = [name for name, _ in example_assignments()]
    assert len(names) == len(set(names)), "a variable is listed twice"
    bare = [
        line.split("=")[0]
        for previous, line in zip(["", *lines], lines, strict=False)
        if re.match(r"^[A-Z][A-Z0-9_]*=", line) and not previous.startswith("#")
    ]
    assert not bare, f"no comment line directly above: {bare}"
