"""The deployment files against the product: docker-compose.yml, the Dockerfile, deploy/kubernetes/.

No container engine or cluster runs here. The files are parsed and each service's command, probes
and environment are checked against the product itself (its management commands and their
arguments, gunicorn's own parser, the URL conf, .env.example, the job type registry, the queue
keys); the manifests are validated offline against the Kubernetes schemas kubernetes-validate
ships. The liveness command (`manage.py jobs_alive`) is tested on real worker and scheduler
processes: alive while idle or standing by, not alive once frozen (SIGSTOP) or killed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import django_rq
import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands, load_command_class
from django.core.management.base import CommandError
from django.test import Client, override_settings
from django.urls import Resolver404, resolve
from django.utils.module_loading import import_string
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL
from rq.worker import Worker as RQWorker

from jobs import mirror, queues, registry, services
from jobs.queue_names import QUEUE_NAMES
from jobs.scheduler import LOCK_KEY
from tests.conftest import BASE_DIR, Processes, wait_for
from tests.helpers import FORKING, liveness

pytestmark = pytest.mark.once

COMPOSE_FILE = BASE_DIR / "docker-compose.yml"
MANIFEST_DIR = BASE_DIR / "deploy" / "kubernetes"
#: The Kubernetes version the manifests are validated against (the newest kubernetes-validate knows).
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()
#: KEDA's custom resources: no schema of Kubernetes describes them.
KEDA_API = "keda.sh/v1alpha1"
#: Seconds RQ lets a work horse overstay its job's timeout before killing it.
RQ_OVERSTAY = 60
#: Seconds a stopping worker gives its mirror to write what is left to the database.
MIRROR_STOP = 15


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def load_manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFEST_DIR.glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


COMPOSE = load_compose()
MANIFESTS = load_manifests()


def app_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the product's image (not Postgres, not Redis)."""
    return {name: service for name, service in COMPOSE["services"].items() if "build" in service}


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in MANIFESTS if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod template of the manifests, by the name of its Deployment or Job."""
    return {doc["metadata"]["name"]: doc["spec"]["template"]["spec"] for doc in objects("Deployment") + objects("Job")}


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def dockerfile_cmd() -> list[str]:
    lines = [line for line in (BASE_DIR / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert len(lines) == 1
    return json.loads(lines[0][4:])


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", dockerfile_cmd())
    return shlex.split(command) if isinstance(command, str) else list(command)


def compose_healthcheck(service: dict[str, Any]) -> list[str] | None:
    test = service.get("healthcheck", {}).get("test")
    if test is None:
        return None
    assert test[0] == "CMD", "healthchecks run a command without a shell"
    return list(test[1:])


def every_command() -> list[tuple[str, list[str]]]:
    """Every command the deployment runs with the product's image, and where."""
    found = [("Dockerfile CMD", dockerfile_cmd())]
    for name, service in app_services().items():
        found.append((f"compose {name}", compose_command(service)))
        check = compose_healthcheck(service)
        if check is not None and check[:2] != ["python", "-c"]:  # the web's is an HTTP probe (below)
            found.append((f"compose {name} healthcheck", check))
    for owner, pod in pod_specs().items():
        for container in containers(pod):
            found.append((f"{owner}/{container['name']}", [*container["command"], *container.get("args", [])]))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if "exec" in container.get(probe, {}):
                    found.append((f"{owner}/{container['name']} {probe}", container[probe]["exec"]["command"]))
    return found


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- commands ----------------------------------------------------------------------------


def check_manage_py(where: str, argv: list[str]) -> None:
    name = argv[2]
    commands = get_commands()
    assert name in commands, f"{where}: manage.py has no command {name!r}"
    command = load_command_class(commands[name], name)
    parser = command.create_parser("manage.py", name)
    try:
        options = parser.parse_args(argv[3:])
    except CommandError as exc:
        pytest.fail(f"{where}: manage.py {name} refuses {argv[3:]}: {exc}")
    queues_named = {"rqworker": "args", "jobs_pool": "queues", "jobs_threads": "queues"}.get(name)
    if queues_named:
        named = getattr(options, queues_named)
        assert named, f"{where}: a worker names its queues"
        assert set(named) <= set(QUEUE_NAMES), f"{where}: unknown queues {named}"
        assert list(named) == [q for q in QUEUE_NAMES if q in named], f"{where}: queues out of order"


def check_gunicorn(where: str, argv: list[str]) -> None:
    from gunicorn.config import Config
    from gunicorn.util import load_class
    from uvicorn_worker import UvicornWorker

    try:
        parsed = Config().parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: gunicorn refuses {argv[1:]}")
    assert parsed.args == ["queueproject.asgi:application"], f"{where}: serves {parsed.args}, not the ASGI app"
    module, _, attribute = parsed.args[0].partition(":")
    assert import_string(f"{module}.{attribute}") is not None
    worker_class = load_class(parsed.worker_class)
    assert issubclass(worker_class, UvicornWorker), f"{where}: {parsed.worker_class} is not a uvicorn worker"
    assert parsed.worker_class == "queueproject.web_worker.UvicornWorker", f"{where}: not the product's worker"


def test_every_command_is_a_real_manage_py_command_or_gunicorn_serving_the_asgi_app() -> None:
    commands = every_command()
    assert len(commands) >= 12
    for where, argv in commands:
        if argv[:2] == ["python", "manage.py"]:
            check_manage_py(where, argv)
        elif argv[0] == "gunicorn":
            check_gunicorn(where, argv)
        else:
            pytest.fail(f"{where}: runs {argv}, neither manage.py nor gunicorn")


def test_a_mistyped_command_or_argument_would_be_caught() -> None:
    """The checks above are not vacuous."""
    with pytest.raises(AssertionError, match="no command"):
        check_manage_py("x", ["python", "manage.py", "rq_worker", "default"])
    with pytest.raises(pytest.fail.Exception, match="refuses"):
        check_manage_py("x", ["python", "manage.py", "jobs_alive", "wroker"])
    with pytest.raises(AssertionError, match="unknown queues"):
        check_manage_py("x", ["python", "manage.py", "rqworker", "default", "urgent"])
    with pytest.raises(AssertionError, match="unknown queues"):
        check_manage_py("x", ["python", "manage.py", "jobs_pool", "-n", "2", "default", "urgent"])
    with pytest.raises(AssertionError, match="out of order"):
        check_manage_py("x", ["python", "manage.py", "jobs_pool", "low", "high"])
    with pytest.raises(AssertionError, match="not a uvicorn worker"):
        check_gunicorn("x", ["gunicorn", "queueproject.asgi:application", "-k", "sync"])


def test_each_role_runs_what_it_should() -> None:
    services = app_services()
    assert compose_command(services["web"])[0] == "gunicorn"
    assert compose_command(services["worker"])[2:5] == ["jobs_pool", "-n", "2"]  # the pooled worker
    assert compose_command(services["scheduler"])[2:3] == ["runscheduler"]
    assert compose_healthcheck(services["worker"]) == ["python", "manage.py", "jobs_alive", "worker"]
    assert compose_healthcheck(services["scheduler"]) == ["python", "manage.py", "jobs_alive", "scheduler"]
    pods = pod_specs()
    main = {owner: pod["containers"][0] for owner, pod in pods.items()}
    assert main["queueproject-web"]["command"][0] == "gunicorn"
    assert main["queueproject-worker"]["command"][2:5] == ["jobs_pool", "-n", "2"]
    assert main["queueproject-worker"]["livenessProbe"]["exec"]["command"][2:] == ["jobs_alive", "worker"]
    assert main["queueproject-scheduler"]["command"][2] == "runscheduler"
    assert main["queueproject-scheduler"]["livenessProbe"]["exec"]["command"][2:] == ["jobs_alive", "scheduler"]


# --- migrations once ----------------------------------------------------------------------


def test_migrations_run_once_never_per_replica() -> None:
    services = app_services()
    migrating = [name for name, service in services.items() if compose_command(service)[2:3] == ["migrate"]]
    assert migrating == ["migrate"]
    assert services["migrate"].get("restart", "no") == "no"
    for name, service in services.items():
        if name != "migrate":
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", f"compose {name} starts before migrations end"
    pods = pod_specs()
    for owner, pod in pods.items():
        for container in containers(pod):
            argv = container["command"]
            if argv[2:3] != ["migrate"]:
                continue
            if owner == "queueproject-migrate":
                assert "--check" not in argv
            else:  # a Deployment only waits: its init container fails while a migration is unapplied
                assert argv[3:] == ["--check"], f"{owner} migrates in every replica"
                assert container in pod.get("initContainers", [])
    assert one("Job", "queueproject-migrate")["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


@pytest.mark.django_db
def test_migrate_check_fails_while_a_migration_is_unapplied(tmp_path: Path) -> None:
    """What the init containers rely on: `migrate --check` exits non-zero on an unmigrated database."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"}
    before = subprocess.run([sys.executable, "manage.py", "migrate", "--check"], cwd=BASE_DIR, env=env, check=False)
    assert before.returncode != 0
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
    after = subprocess.run([sys.executable, "manage.py", "migrate", "--check"], cwd=BASE_DIR, env=env, check=False)
    assert after.returncode == 0


# --- probes ---------------------------------------------------------------------------------


def http_probes() -> list[tuple[str, str, str]]:
    """(where, path, Host header) of every HTTP probe."""
    found = []
    for owner, pod in pod_specs().items():
        for container in containers(pod):
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                get = container.get(probe, {}).get("httpGet")
                if get:
                    headers = {h["name"].lower(): h["value"] for h in get.get("httpHeaders", [])}
                    assert get["port"] in [p.get("name") for p in container["ports"]] + [
                        p["containerPort"] for p in container["ports"]
                    ]
                    found.append((f"{owner} {probe}", get["path"], headers.get("host", "")))
    check = compose_healthcheck(app_services()["web"])
    assert check is not None
    assert check[:2] == ["python", "-c"]
    url = re.search(r"http://([^/'\"]+)(/[^'\"]*)", check[2])
    assert url is not None
    found.append(("compose web healthcheck", url.group(2), url.group(1)))
    return found


def configmap_env() -> dict[str, str]:
    return dict(one("ConfigMap", "queueproject-config")["data"])


@pytest.mark.django_db
def test_every_probe_path_resolves_and_answers_json() -> None:
    probes = http_probes()
    paths = {path for _, path, _ in probes}
    assert {"/healthz", "/readyz"} <= paths
    web = one("Deployment", "queueproject-web")["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"  # never Redis or the database: no restarts
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    allowed = configmap_env()["ALLOWED_HOSTS"].split(",")
    client = Client()
    for where, path, host in probes:
        try:
            resolve(path)
        except Resolver404:
            pytest.fail(f"{where}: {path} is not in queueproject/urls.py")
        assert host.split(":")[0] in [*allowed, "localhost"], f"{where}: Host {host!r} is not allowed"
        with override_settings(ALLOWED_HOSTS=allowed):
            response = client.get(path, HTTP_HOST=host)
        assert response.status_code in (200, 503), f"{where}: {path} answered {response.status_code}"
        assert response["Content-Type"] == "application/json"
        assert response.json()["status"] == "ok"  # Redis and the database answer here


# --- environment ------------------------------------------------------------------------------


def documented() -> set[str]:
    names = set()
    for line in (BASE_DIR / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def kubernetes_env() -> dict[str, set[str]]:
    """Every variable each pod template sets: its env, and the ConfigMaps and Secrets it takes whole."""
    sources: dict[tuple[str, str], set[str]] = {}
    for doc in objects("ConfigMap"):
        sources[("configMapRef", doc["metadata"]["name"])] = set(doc.get("data", {}))
    for doc in objects("Secret"):
        sources[("secretRef", doc["metadata"]["name"])] = set(doc.get("stringData", {})) | set(doc.get("data", {}))
    found = {}
    for owner, pod in pod_specs().items():
        for container in containers(pod):
            names = {entry["name"] for entry in container.get("env", [])}
            for source in container.get("envFrom", []):
                ((ref, target),) = source.items()
                key = (ref, target["name"])
                assert key in sources, f"{owner}: {ref} {target['name']} is not in deploy/kubernetes/"
                names |= sources[key]
            found[f"{owner}/{container['name']}"] = names
    return found


def test_every_variable_the_deployment_sets_is_documented_in_env_example() -> None:
    known = documented()
    for name, service in app_services().items():
        missing = set(service["environment"]) - known
        assert not missing, f"compose {name} sets undocumented {sorted(missing)}"
    for where, names in kubernetes_env().items():
        missing = names - known
        assert not missing, f"{where} sets undocumented {sorted(missing)}"


_VARIABLE = re.compile(r"\$\$|\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> str:
    """Compose's variable substitution (`${X}`, `${X:-default}`, `${X:?error}`, `$$`)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if operator in (":?", "?") and not current:
            raise KeyError(f"{name}: {argument}")
        if operator == ":-":
            return current or argument
        if operator == "-":
            return argument if current is None else current
        return current or ""

    return _VARIABLE.sub(substitute, str(value))


def production_env(settings_env: dict[str, str]) -> dict[str, str]:
    """A process environment of nothing but `settings_env`, on the tests' Redis and database."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(settings_env)
    env.update(
        REDIS_URL=settings.REDIS_URL,
        DATABASE_URL="sqlite:///:memory:",  # checks open no database
        ENV_FILE=os.devnull,  # not a developer's .env
    )
    return env


def test_compose_refuses_to_start_without_its_secrets() -> None:
    web = app_services()["web"]["environment"]
    with pytest.raises(KeyError, match="SECRET_KEY"):
        interpolate(web["SECRET_KEY"], {})
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        interpolate(web["REDIS_URL"], {"SECRET_KEY": "k"})


#: A secret key as a deployment makes one (.env.example, the compose file's first lines).
SECRET_KEY = secrets.token_urlsafe(50)


def compose_settings() -> dict[str, str]:
    given = {"SECRET_KEY": SECRET_KEY, "REDIS_PASSWORD": "p" * 24}
    return {key: interpolate(value, given) for key, value in app_services()["web"]["environment"].items()}


def test_the_compose_environment_is_production_with_debug_off() -> None:
    values = compose_settings()
    assert values["DEBUG"] == "false"
    assert values["LOG_FORMAT"] == "json"
    assert "localhost" in values["ALLOWED_HOSTS"].split(",")
    assert values["CSRF_TRUSTED_ORIGINS"]
    for name in ("TLS_TERMINATED_BY_PROXY", "SECURE_COOKIES", "METRICS_TOKEN", "FILES_STORAGE"):
        assert name in values
    assert values["REDIS_URL"] == f"redis://:{'p' * 24}@redis:6379/0"
    assert values["DB_POOL"] == "true"
    # Every service of the application runs with the same settings.
    for name, service in app_services().items():
        assert set(service["environment"]) >= set(app_services()["worker"]["environment"]), name


@pytest.mark.parametrize("source", ["compose", "kubernetes"])
def test_the_deployments_settings_pass_check_deploy(source: str) -> None:
    """The settings each deployment gives the product load with DEBUG off and pass `check --deploy`."""
    if source == "compose":
        values = compose_settings()
    else:
        values = configmap_env()
        values.update(one("Secret", "queueproject-secrets")["stringData"])
        values["SECRET_KEY"] = SECRET_KEY  # what its REPLACE placeholder says to put there
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=production_env(values),
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no issues" in check.stdout


# --- scaling and shutdown ---------------------------------------------------------------------


def longest_builtin_timeout() -> int:
    builtin = [spec for spec in registry.all_types() if spec.func.__module__.startswith("jobs.tasks.")]
    assert {spec.name for spec in builtin} >= {"example", "email", "bulk_action", "report"}
    return max(spec.timeout for spec in builtin)


def seconds(duration: str) -> int:
    """A compose duration ("32m", "1h30m", "90s") in seconds."""
    parts = re.findall(r"(\d+)(h|m|s)", duration)
    assert "".join(f"{n}{u}" for n, u in parts) == duration, duration
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def test_workers_are_given_longer_to_stop_than_the_longest_job_may_run() -> None:
    longest = longest_builtin_timeout()
    assert longest == 6 * 3600  # bulk_action's
    compose_grace = seconds(app_services()["worker"]["stop_grace_period"])
    pod = one("Deployment", "queueproject-worker")["spec"]["template"]["spec"]
    for grace in (compose_grace, pod["terminationGracePeriodSeconds"]):
        assert grace > longest + RQ_OVERSTAY + DEFAULT_JOB_MONITORING_INTERVAL + MIRROR_STOP, (
            f"{grace} s would cut a {longest} s job short"
        )
    # A worker its probe found hung is killed soon: it would never finish its job anyway.
    assert pod["containers"][0]["livenessProbe"]["terminationGracePeriodSeconds"] <= 120


def test_workers_scale_as_separate_containers() -> None:
    """`--scale worker=N`: nothing in the worker's service would clash between two replicas."""
    worker = app_services()["worker"]
    for clashing in ("container_name", "hostname", "ports"):
        assert clashing not in worker, f"compose worker sets {clashing}: its replicas would clash"
    argv = compose_command(worker)
    assert "--name" not in argv, "RQ names each worker process uniquely; one fixed name would clash"
    assert "--burst" not in argv
    scheduler = app_services()["scheduler"]
    assert scheduler["deploy"]["replicas"] == 2
    assert "ports" not in scheduler


def test_the_scheduler_runs_twice_one_leading() -> None:
    deployment = one("Deployment", "queueproject-scheduler")
    assert deployment["spec"]["replicas"] == 2
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity, "the two schedulers should prefer different machines"


def test_liveness_thresholds_leave_an_idle_or_busy_worker_alive() -> None:
    """An idle worker beats every --worker-ttl - 15 s, a busy one every 30 s (the pool for its busy
    processes: --job-monitoring-interval): both under the threshold."""
    threshold = int(configmap_env()["JOBS_ALIVE_THRESHOLD"])
    assert threshold == settings.JOBS_ALIVE_THRESHOLD  # the default is the deployed value
    worker_commands = [compose_command(app_services()["worker"])]
    worker_commands.append(
        one("Deployment", "queueproject-worker")["spec"]["template"]["spec"]["containers"][0]["command"]
    )
    for argv in worker_commands:
        idle_beat = int(option(argv, "--worker-ttl")) - 15
        assert idle_beat + 30 <= threshold, f"an idle worker ({argv}) beats every {idle_beat} s: too close"
        busy_beat = float(option(argv, "--job-monitoring-interval")) if "--job-monitoring-interval" in argv else None
        assert (busy_beat or DEFAULT_JOB_MONITORING_INTERVAL) + 30 <= threshold, f"a busy worker ({argv}): too close"
    # The probe's period and failures leave a frozen worker a couple of minutes at most.
    probe = one("Deployment", "queueproject-worker")["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert threshold + probe["periodSeconds"] * probe["failureThreshold"] <= 180
    assert probe["timeoutSeconds"] >= 5  # a Django start-up, about a second


# --- Kubernetes validation and KEDA -------------------------------------------------------------


def test_the_manifests_validate_offline_against_the_kubernetes_schemas() -> None:
    """kubernetes-validate ships the schemas: nothing is fetched. KEDA's objects are custom resources
    that no Kubernetes schema describes: they are checked by the next test instead."""
    validated = 0
    for filename, doc in MANIFESTS:
        if doc["apiVersion"] == KEDA_API:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{filename} {doc['kind']} {doc['metadata']['name']}: {exc.message}")
        validated += 1
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert kinds >= {"Deployment", "Service", "Job", "ConfigMap", "Secret", "ScaledObject", "TriggerAuthentication"}
    assert validated >= 8
    namespaces = {doc["metadata"].get("namespace") for _, doc in MANIFESTS if doc["kind"] != "Namespace"}
    assert namespaces == {one("Namespace", "queueproject")["metadata"]["name"]}


def test_validation_catches_a_mistake() -> None:
    broken = json.loads(json.dumps(one("Deployment", "queueproject-worker")))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_keda_scales_the_workers_on_rqs_own_queue_keys() -> None:
    scaled = one("ScaledObject", "queueproject-worker")
    assert scaled["apiVersion"] == KEDA_API
    spec = scaled["spec"]
    target = one("Deployment", spec["scaleTargetRef"]["name"])
    assert target["spec"]["template"]["spec"]["containers"][0]["command"][2] == "jobs_pool"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    queue_keys = {django_rq.get_queue(name).key for name in QUEUE_NAMES}
    assert queue_keys == {f"rq:queue:{name}" for name in QUEUE_NAMES}
    triggers = spec["triggers"]
    assert {trigger["type"] for trigger in triggers} == {"redis"}  # KEDA's Redis list scaler
    assert {trigger["metadata"]["listName"] for trigger in triggers} == queue_keys
    secrets = {doc["metadata"]["name"]: doc for doc in objects("Secret")}
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert int(metadata["listLength"]) >= 1
        assert re.fullmatch(r"[a-z0-9.-]+:\d+", metadata["address"])
        assert metadata["databaseIndex"] == "0"  # REDIS_URL's database in the example Secret
        assert all(isinstance(value, str) for value in metadata.values()), "KEDA's metadata values are strings"
        auth = one("TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["apiVersion"] == KEDA_API
        (ref,) = auth["spec"]["secretTargetRef"]
        assert ref["parameter"] == "password"
        assert ref["key"] in secrets[ref["name"]]["stringData"]
        # The scaler's secret is KEDA's alone: no pod takes it as environment.
        for pod in pod_specs().values():
            for container in containers(pod):
                assert {"secretRef": {"name": ref["name"]}} not in container.get("envFrom", [])


@pytest.mark.django_db(transaction=True)
def test_keda_counts_what_rq_queues(redis_db: Any) -> None:
    """The key a trigger reads is the list RQ keeps the ids of a queue's waiting jobs in."""
    for _ in range(3):
        services.job_enqueue(type="example", queue="low")
    (trigger,) = [
        t
        for t in one("ScaledObject", "queueproject-worker")["spec"]["triggers"]
        if t["metadata"]["listName"].endswith(":low")
    ]
    assert redis_db.type(trigger["metadata"]["listName"]) == b"list"
    assert redis_db.llen(trigger["metadata"]["listName"]) == 3


# --- the liveness command on real processes ---------------------------------------------------------


def jobs_alive(processes: Processes, *args: str, **env: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "manage.py", "jobs_alive", *args],
        cwd=BASE_DIR,
        env=processes.env(**env),
        capture_output=True,
        text=True,
        timeout=120,  # a Django start-up; minutes on a machine busy with the whole test command
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    return done.returncode, lines[0]


def stays(seconds: float, *args: str, threshold: str | None = None) -> list[str]:
    """jobs_alive's answers over `seconds`: every one must be alive."""
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code, line = liveness(*args, threshold=threshold)
        assert code == 0, line
        answers.append(line)
        time.sleep(1.0)
    return answers


def until_not_alive(timeout: float, *args: str, threshold: str | None = None) -> str:
    answer: list[str] = []

    def not_alive() -> bool:
        code, line = liveness(*args, threshold=threshold)
        answer[:] = [line]
        return code == 1

    wait_for(not_alive, timeout, interval=0.5, message=f"jobs_alive {' '.join(args)} to fail")
    return answer[0]


#: The test's threshold: shorter than in production (90 s), with workers beating every 5 s while idle.
THRESHOLD = "12"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_is_alive_a_frozen_or_killed_one_is_not(processes: Processes) -> None:
    # --worker-ttl 20: an idle worker beats every 5 s (production: 60, every 45 s; threshold 90).
    worker = processes.start("rqworker", "--worker-class", FORKING, "--worker-ttl", "20", *QUEUE_NAMES)
    processes.wait_until_listening(worker)
    # Idle for longer than the threshold and than its mirror's key lives (JOBS_WORKER_DEAD_AFTER).
    answers = stays(15, "worker", threshold=THRESHOLD)
    (name,) = {re.match(r"alive: worker (\S+) beat", line).group(1) for line in answers}  # type: ignore[union-attr]
    assert RQWorker.find_by_key(RQWorker.redis_worker_namespace_prefix + name, connection=queues.new_redis())
    code, line = jobs_alive(processes, "worker", JOBS_ALIVE_THRESHOLD=THRESHOLD)
    assert (code, line.startswith(f"alive: worker {name} beat")) == (0, True), line

    os.kill(worker.pid, signal.SIGSTOP)  # frozen: its mirror, a process of its own, still beats
    try:
        stopped = time.monotonic()
        line = until_not_alive(40, "worker", threshold=THRESHOLD)
        assert f"worker {name} last beat" in line
        assert "frozen or hung" in line
        assert time.monotonic() - stopped <= int(THRESHOLD) + 15
        code, line = jobs_alive(processes, "worker", JOBS_ALIVE_THRESHOLD=THRESHOLD)
        assert code == 1
        assert "frozen or hung" in line
        assert queues.redis().exists(mirror.alive_key(name)), "the mirror alone cannot tell a frozen worker"
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_for(lambda: liveness("worker", threshold=THRESHOLD)[0] == 0, 20, interval=0.5)

    os.kill(worker.pid, signal.SIGKILL)
    line = until_not_alive(15, "worker", threshold=THRESHOLD)
    assert f"worker {name}: its mirror stopped beating" in line
    assert jobs_alive(processes, "worker", JOBS_ALIVE_THRESHOLD=THRESHOLD) == (1, line)


def scheduler_names(host: str) -> tuple[str, str]:
    """(active, standby) among the two schedulers of `host`."""
    conn = queues.redis()

    def both() -> list[str] | None:
        names = sorted(c.name for c in mirror.consumers(conn) if c.name.startswith(f"scheduler:{host}:"))
        return names if len(names) == 2 and conn.get(LOCK_KEY) else None

    names: list[str] = wait_for(both, 20, message="two schedulers reading the stream, one leading")
    active = conn.get(LOCK_KEY).decode()  # type: ignore[union-attr]
    (standby,) = [name for name in names if name != active]
    return active, standby


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_standby_scheduler_is_alive_a_frozen_or_killed_one_is_not(processes: Processes) -> None:
    first = processes.scheduler()
    second = processes.scheduler()
    active, standby = scheduler_names(socket.gethostname())
    # A scheduler's name is scheduler:<host>:<pid>:<random>.
    by_name = {name: proc for proc in (first, second) for name in (active, standby) if f":{proc.pid}:" in name}
    assert len(by_name) == 2

    # Longer than the liveness key lives (JOBS_WORKER_DEAD_AFTER=6 here): the standby beats as the leader does.
    answers = stays(10, "scheduler", "--name", standby)
    assert all(line == f"alive: {standby} (standby) beating" for line in answers)
    code, line = jobs_alive(processes, "scheduler")
    assert code == 0
    assert f"{active} (active)" in line
    assert f"{standby} (standby)" in line

    os.kill(by_name[standby].pid, signal.SIGSTOP)
    try:
        line = until_not_alive(20, "scheduler", "--name", standby)
        assert "no liveness key" in line
        assert jobs_alive(processes, "scheduler")[0] == 0  # this host still has a scheduler that beats
        os.kill(by_name[active].pid, signal.SIGKILL)
        line = until_not_alive(20, "scheduler")
        assert "no liveness key" in line
        assert active in line
        assert standby in line
        assert jobs_alive(processes, "scheduler") == (1, line)
    finally:
        os.kill(by_name[standby].pid, signal.SIGCONT)
    wait_for(lambda: liveness("scheduler", "--name", standby)[0] == 0, 20, interval=0.5)


# --- one worker per container ------------------------------------------------------------------


def can_set_hostname() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    done = subprocess.run([unshare, "--uts", "--fork", "hostname", "probe-host"], capture_output=True, check=False)
    return done.returncode == 0


def in_container(processes: Processes, host: str, *args: str) -> subprocess.Popen[bytes]:
    """`manage.py *args` with a host name of its own, as in a container (a UTS namespace)."""
    log_path = processes.tmp_path / f"{host}-{len(processes.started)}.log"
    process = subprocess.Popen(
        [
            "unshare",
            "--uts",
            "--fork",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            host,
            sys.executable,
            "manage.py",
            *args,
        ],
        cwd=BASE_DIR,
        env=processes.env(),
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    processes.started.append((process, log_path))
    return process


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_workers_in_two_containers_have_two_names_and_each_probe_judges_its_own(processes: Processes) -> None:
    if not can_set_hostname():
        pytest.skip("needs unshare --uts (root) to give each worker a host name of its own")
    for host in ("worker-a", "worker-b"):
        command = ("rqworker", "--worker-class", FORKING, "--worker-ttl", "20", *QUEUE_NAMES)
        worker = in_container(processes, host, *command)
        processes.wait_until_listening(worker)
    workers = RQWorker.all(connection=queues.new_redis())
    assert sorted(str(w.hostname) for w in workers) == ["worker-a", "worker-b"]
    assert len({w.name for w in workers}) == 2
    names = {w.hostname: w.name for w in workers}
    for host in ("worker-a", "worker-b"):
        probe = in_container(processes, host, "jobs_alive", "worker")
        assert probe.wait(timeout=30) == 0
        log = processes.log(probe)
        assert f"alive: worker {names[host]} beat" in log, log
