"""docker-compose.yml and deploy/Dockerfile, checked without Docker by doing what Docker would.

There is no Docker engine here, so nothing is built or started; instead each
check runs what the image and the compose services would run, as far as that
is possible on this machine, and fails when the deployment would:

* the Dockerfile is parsed into its instructions; its CMD, and every compose
  command, is exec form and runs through the installed `infraprism` entry
  point and the real argument parser (every flag spelled exactly);
* the build context is the repository filtered by the Dockerfile's own
  .dockerignore, by Docker's matching rules; the COPY instructions are applied
  to it to make the image's /app, and setuptools' build_py (the step `pip
  install .` runs) builds the three packages from that tree; every module of
  the result imports from there alone, so a file the image lacks fails here;
* every INFRAPRISM_* variable compose sets is a real setting with a valid
  value, and the addresses and ports agree across services, health checks,
  EXPOSE and published ports;
* the health checks run: the detector's against a real redis-server, the
  API's against the real app, each also against nothing, where it must fail.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from infraprism.cli import build_parser
from infraprism.dev.local_services import free_port
from infraprism.settings import Settings
from tests.api.helpers import LiveServer

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
WORKERS = ["aggregator", "detector", "budget-watcher", "api"]
# The console script, as installed in this venv: what `infraprism` is on the image's PATH.
ENTRY_POINT = Path(sys.executable).with_name("infraprism")


# --- the Dockerfile, parsed -----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON array of a CMD/ENTRYPOINT; shell form would make /bin/sh PID 1, which
        does not pass SIGTERM on, so `docker stop` would kill the worker mid-batch."""
        try:
            argv = json.loads(self.value)
        except ValueError:
            argv = None
        exec_form = isinstance(argv, list) and bool(argv) and all(isinstance(a, str) for a in argv)
        assert exec_form, f"line {self.line}: {self.keyword} {self.value} is not exec form (a JSON array of strings)"
        assert isinstance(argv, list)
        return argv


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    first = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if not pending:
            first = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        keyword, _, value = " ".join([*pending, line]).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), first))
        pending = []
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def build_of(service: dict[str, Any]) -> tuple[Path, Path]:
    """(context, Dockerfile) of a compose service that builds an image."""
    build = service["build"]
    context = ROOT / build["context"]
    return context, context / build.get("dockerfile", "Dockerfile")


IMAGE_CONTEXT, DOCKERFILE = build_of(SERVICES["api"])
INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())


def instructions(keyword: str) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.keyword == keyword]


def only(keyword: str) -> Instruction | None:
    found = instructions(keyword)
    assert len(found) <= 1, f"more than one {keyword}: only the last counts, which is confusing"
    return found[0] if found else None


def image_command(command: list[str] | None = None) -> list[str]:
    """What a container runs: ENTRYPOINT, then the command (compose's, else CMD)."""
    entrypoint, cmd = only("ENTRYPOINT"), only("CMD")
    argv = entrypoint.exec_form() if entrypoint else []
    if command is not None:
        return argv + command
    return argv + (cmd.exec_form() if cmd else [])


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    # Compose splits a string command itself, like a shell would but with no shell.
    return shlex.split(command) if isinstance(command, str) else list(command)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


# --- the build context: .dockerignore, as Docker matches it ---------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher: `**` any number of directories, `*` and `?` within one."""
    out = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
            continue
        if pattern.startswith("**", index):
            out += ".*"
            index += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        index += 1
    return re.compile(out + r"\Z")


def read_dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str], str]]:
    """(is an exception, regex, pattern) per line, in order; the last match decides."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern), pattern))
    return rules


def _self_and_parents(path: str) -> list[str]:
    parts = PurePosixPath(path).parts
    return ["/".join(parts[: n + 1]) for n in range(len(parts))]


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str], str]]) -> bool:
    """A path is matched by a pattern that matches it or any of its parent directories."""
    result = False
    for negate, regex, _ in rules:
        if any(regex.match(candidate) for candidate in _self_and_parents(path)):
            result = not negate
    return result


def _may_reinclude_below(directory: str, rules: list[tuple[bool, re.Pattern[str], str]]) -> bool:
    """Whether an exception could bring back a file under an ignored directory (else the walk
    skips it: .git, .venv)."""
    depth = len(PurePosixPath(directory).parts)
    for negate, regex, pattern in rules:
        parts = PurePosixPath(pattern).parts
        if not negate:
            continue
        if "**" in pattern:
            return True
        if len(parts) <= depth and any(regex.match(c) for c in _self_and_parents(directory)):
            return True
        if len(parts) > depth and _pattern_regex("/".join(parts[:depth])).match(directory):
            return True
    return False


def build_context(context: Path, dockerignore: Path) -> set[str]:
    """The files Docker sends for `context`: every file the ignore rules leave in."""
    rules = read_dockerignore(dockerignore)
    sent: set[str] = set()
    for folder, dirs, files in os.walk(context):
        rel = Path(folder).relative_to(context).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs[:] = [
            d
            for d in dirs
            if d != ".git" and not (ignored(prefix + d, rules) and not _may_reinclude_below(prefix + d, rules))
        ]
        sent.update(prefix + name for name in files if not ignored(prefix + name, rules))
    return sent


# The file BuildKit reads for deploy/Dockerfile is deploy/Dockerfile.dockerignore.
DOCKERIGNORE = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
CONTEXT_FILES = build_context(IMAGE_CONTEXT, DOCKERIGNORE)


def test_dockerignore_rules_match_like_docker():
    rules = read_dockerignore(DOCKERIGNORE)
    assert not ignored("infraprism/cli.py", rules)
    assert not ignored("api/top_entities.lua", rules)
    assert ignored("infraprism/__pycache__/cli.cpython-311.pyc", rules)
    assert ignored(".venv/bin/python", rules)
    assert ignored("tests/test_deploy.py", rules)


def test_the_build_context_is_small_and_holds_what_the_image_needs():
    assert DOCKERIGNORE.is_file(), f"BuildKit reads {DOCKERIGNORE.name} next to the Dockerfile; it is missing"
    tops = {PurePosixPath(path).parts[0] for path in CONTEXT_FILES}
    assert tops <= {"pyproject.toml", "README.md", "LICENSE", "infraprism", "pipeline", "api"}, tops
    assert not [path for path in CONTEXT_FILES if "__pycache__" in path or path.endswith(".pyc")]


# --- the image's /app, built as the Dockerfile says -----------------------------------------


def _context_entries(source: str) -> list[str]:
    source = os.path.normpath(source)
    if source in CONTEXT_FILES:
        return [source]
    return sorted(path for path in CONTEXT_FILES if path.startswith(source + "/"))


def assemble_image(into: Path) -> Path:
    """Apply WORKDIR and COPY to `into` (the image's /); returns the final WORKDIR."""
    workdir = PurePosixPath("/")
    for step in INSTRUCTIONS:
        if step.keyword == "WORKDIR":
            workdir = workdir / step.value
        elif step.keyword == "ADD":
            raise AssertionError(f"line {step.line}: ADD (which fetches and unpacks): teach this test, or COPY")
        elif step.keyword == "COPY":
            words = shlex.split(step.value)
            flags = [w for w in words if w.startswith("--")]
            assert not [f for f in flags if f.startswith("--from")], "multi-stage COPY: teach this test"
            *sources, dest = [w for w in words if not w.startswith("--")]
            target = workdir / dest
            for source in sources:
                entries = _context_entries(source)
                assert entries, f"line {step.line}: COPY {source}: not in the build context (missing or ignored)"
                is_file = entries == [os.path.normpath(source)]
                for entry in entries:
                    if is_file:
                        inside = (
                            target / PurePosixPath(entry).name if dest.endswith("/") or len(sources) > 1 else target
                        )
                    else:
                        inside = target / PurePosixPath(entry).relative_to(os.path.normpath(source))
                    path = into / inside.relative_to("/")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(IMAGE_CONTEXT / entry, path)
    return into / workdir.relative_to("/")


# setuptools' build_py over the image's /app, configured from pyproject's [tool.setuptools]
# (not from its [project] table: this venv's setuptools may be older than the build backend).
BUILD_PY = """
import sys, tomllib
from setuptools import Distribution
tool = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]
dist = Distribution({
    "name": "infraprism",
    "packages": tool["packages"],
    "package_dir": tool.get("package-dir", {}),
    "package_data": tool.get("package-data", {}),
})
dist.script_name = "setup.py"
command = dist.get_command_obj("build_py")
command.build_lib = sys.argv[1]
dist.run_command("build_py")
"""

# Import every module of the built tree with no site-packages processing (so not this
# venv's editable install of the repository): only the image's files and the dependencies.
IMPORT_ALL = """
import importlib, json, pathlib, sys
root = pathlib.Path(sys.argv[1])
names = sorted(
    ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    for p in root.rglob("*.py")
)
files = {}
for name in names:
    module = importlib.import_module(name)
    files[name] = module.__file__
scripts = json.loads(sys.argv[2])
for target in scripts.values():
    module, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attr)), target
print(json.dumps(files))
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the image's WORKDIR, the packages `pip install .` would install from it)."""
    root = tmp_path_factory.mktemp("image")
    workdir = assemble_image(root)
    built = tmp_path_factory.mktemp("site-packages")
    result = subprocess.run(
        [sys.executable, "-c", BUILD_PY, str(built)], cwd=workdir, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"build_py in the image's {workdir.relative_to(root)} failed:\n{result.stderr}"
    return workdir, built


def test_the_image_runs_pip_install_of_its_workdir():
    installs = [
        shlex.split(command)
        for step in instructions("RUN")
        for command in re.split(r"&&|;", step.value)
        if "pip" in shlex.split(command)[:3]
    ]
    assert installs, "no RUN pip install"
    assert any(argv[argv.index("install") + 1 :] == ["."] for argv in installs if "install" in argv), installs


def test_the_base_image_has_a_python_the_project_accepts():
    image = only("FROM")
    assert image is not None
    match = re.fullmatch(r"python:(\d+\.\d+)[\w.-]*", image.value.split()[0])
    assert match, f"FROM {image.value}: not an official python image; check its Python by hand"
    assert match.group(1) + ".0" in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_the_image_tree_holds_the_project_metadata(image):
    workdir, _ = image
    assert (workdir / "pyproject.toml").is_file()
    assert (workdir / PYPROJECT["project"]["readme"]).is_file(), "pyproject's readme is not copied"


def test_pip_install_in_the_image_builds_every_package_and_its_data(image):
    workdir, built = image
    tool = PYPROJECT["tool"]["setuptools"]
    for package in tool["packages"]:
        assert (built / package.replace(".", "/") / "__init__.py").is_file(), f"{package} is not installed"
    # Every source file under a package folder is in the install: a new subpackage or data
    # file that pyproject does not list would be missing from the image.
    for package, folder in tool["package-dir"].items():
        for source in (workdir / folder).rglob("*"):
            if source.is_file():
                installed = built / package.replace(".", "/") / source.relative_to(workdir / folder)
                assert installed.is_file(), f"{folder}/{source.relative_to(workdir / folder)} is not installed"


def test_every_installed_module_imports_from_the_image_alone(image):
    _, built = image
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(built), *site])}
    result = subprocess.run(
        [sys.executable, "-S", "-c", IMPORT_ALL, str(built), json.dumps(PYPROJECT["project"]["scripts"])],
        cwd=built.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    assert {"infraprism.cli", "infraprism.pipeline.aggregator", "infraprism.api.server"} <= set(files)
    strays = {name: path for name, path in files.items() if not Path(path).is_relative_to(built)}
    assert not strays, f"imported from outside the image: {strays}"


def test_the_image_runs_as_the_user_it_creates():
    user = only("USER")
    assert user is not None, "the image runs as root"
    created = [
        shlex.split(command)[-1]
        for step in instructions("RUN")
        for command in step.value.split("&&")
        if shlex.split(command)[:1] == ["useradd"]
    ]
    assert user.value in created, f"USER {user.value} is never created"


def test_the_default_command_is_exec_form_and_runs_through_the_entry_point():
    argv = image_command()
    assert argv[0] in PYPROJECT["project"]["scripts"], f"{argv[0]} is not a console script of the project"
    result = subprocess.run([str(ENTRY_POINT), *argv[1:]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: infraprism" in result.stdout


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_has_kafka_kraft_redis_aof_and_the_three_workers():
    assert set(SERVICES) == {"kafka", "redis", *WORKERS}
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node
    redis_command = SERVICES["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in SERVICES["redis"]["volumes"])


@pytest.mark.parametrize("name", ["kafka", "redis", *WORKERS])
def test_every_service_has_a_health_check_and_python_ones_compile(name):
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL"), test
    if test[1:3] == ["python", "-c"]:
        compile(test[3], f"{name} healthcheck", "exec")


@pytest.mark.parametrize("name", WORKERS)
def test_workers_build_the_one_image_and_wait_for_healthy_dependencies(name):
    service = SERVICES[name]
    assert build_of(service) == (IMAGE_CONTEXT, DOCKERFILE)
    assert DOCKERFILE.is_file()
    for dependency, how in service["depends_on"].items():
        assert how == {"condition": "service_healthy"}
        assert SERVICES[dependency]["healthcheck"]["test"]
    assert set(service["depends_on"]) == {"kafka", "redis"}


def _parse(argv: list[str]) -> Any:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`infraprism {shlex.join(argv)}` does not parse") from exc


def _options_of(subcommand: str) -> set[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and subcommand in a.choices)
    return set(subparsers.choices[subcommand]._option_string_actions)


@pytest.mark.parametrize("name", WORKERS)
def test_worker_commands_are_real_subcommands_with_real_flags(name):
    argv = image_command(compose_command(SERVICES[name]))
    assert argv[0] in PYPROJECT["project"]["scripts"], f"{argv[0]} is not a console script of the project"
    args = _parse(argv[1:])
    assert args.command == name
    assert args.handler.__name__ == f"cmd_{name.replace('-', '_')}"
    # argparse accepts an abbreviation (--metrics for --metrics-port); the file should not rely on it.
    flags = {word.split("=", 1)[0] for word in argv[2:] if word.startswith("-")}
    assert flags <= _options_of(name), f"not spelled as the parser spells them: {flags - _options_of(name)}"
    # The installed console script has the subcommand (it exits 2 on an unknown one).
    result = subprocess.run([str(ENTRY_POINT), name, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"usage: infraprism {name}" in result.stdout


@pytest.mark.parametrize("name", WORKERS)
def test_worker_environment_is_real_settings_with_valid_values(name, monkeypatch):
    env = environment(SERVICES[name])
    fields = {f"INFRAPRISM_{field.upper()}" for field in Settings.model_fields}
    # Settings ignores unknown variables, so a misspelt one would silently change nothing.
    unknown = [variable for variable in env if variable.startswith("INFRAPRISM_") and variable not in fields]
    assert not unknown, f"not settings of infraprism.settings.Settings: {unknown}"
    for variable in [v for v in os.environ if v.startswith("INFRAPRISM_")]:
        monkeypatch.delenv(variable)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    settings = Settings()  # raises on an invalid value
    assert "INFRAPRISM_KAFKA_BOOTSTRAP" in env
    assert "INFRAPRISM_REDIS_URL" in env

    host, _, port = settings.kafka_bootstrap.partition(":")
    listeners = SERVICES[host]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert any(urlsplit(listener).netloc == f"{host}:{port}" for listener in listeners), (
        f"{settings.kafka_bootstrap} is not an advertised listener of the {host} service"
    )
    redis = urlsplit(settings.redis_dsn())
    assert redis.hostname in SERVICES, redis.hostname
    redis_command = SERVICES[redis.hostname]["command"]
    served = redis_command[redis_command.index("--port") + 1] if "--port" in redis_command else "6379"
    assert str(redis.port or 6379) == served


def _settings_of(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for variable in [v for v in os.environ if v.startswith("INFRAPRISM_")]:
        monkeypatch.delenv(variable)
    for variable, value in environment(SERVICES[name]).items():
        monkeypatch.setenv(variable, value)
    return Settings()


def _health_url(name: str) -> Any:
    code = SERVICES[name]["healthcheck"]["test"][3]
    (url,) = re.findall(r"https?://[^'\"]+", code)
    return urlsplit(url)


def _exposed() -> set[int]:
    return {int(port.split("/")[0]) for step in instructions("EXPOSE") for port in step.value.split()}


def test_the_api_listens_where_it_is_published_and_checked(monkeypatch):
    service = SERVICES["api"]
    args = _parse(image_command(compose_command(service))[1:])
    settings = _settings_of("api", monkeypatch)
    host = args.host if args.host is not None else settings.api_host
    port = args.port if args.port is not None else settings.api_port
    # 127.0.0.1 inside a container is unreachable through the published port.
    assert host == "0.0.0.0"
    assert any(str(mapping).rsplit(":", 1)[-1] == str(port) for mapping in service["ports"]), service["ports"]
    assert port in _exposed()
    url = _health_url("api")
    assert (url.hostname, url.port) == ("127.0.0.1", port)


def test_the_aggregator_serves_metrics_where_it_is_checked(monkeypatch):
    args = _parse(image_command(compose_command(SERVICES["aggregator"]))[1:])
    settings = _settings_of("aggregator", monkeypatch)
    port = args.metrics_port if args.metrics_port is not None else settings.metrics_port
    assert port, "the aggregator serves no metrics, yet its health check reads them"
    url = _health_url("aggregator")
    assert (url.hostname, url.port, url.path) == ("127.0.0.1", port, "/metrics")
    assert port in _exposed()


def _run_health_check(name: str, env: dict[str, str], replace: tuple[str, str] | None = None) -> int:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code = test[3] if replace is None else test[3].replace(*replace)
    timeout = float(str(SERVICES[name]["healthcheck"]["timeout"]).removesuffix("s"))
    try:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return -1


def test_the_detector_health_check_passes_on_a_live_redis_and_fails_without(redis_url):
    env = {**os.environ, **environment(SERVICES["detector"])}
    assert _run_health_check("detector", {**env, "INFRAPRISM_REDIS_URL": redis_url}) == 0
    dead = f"redis://127.0.0.1:{free_port()}/0"
    assert _run_health_check("detector", {**env, "INFRAPRISM_REDIS_URL": dead}) != 0


def test_the_api_health_check_passes_on_the_real_app_and_fails_without(redis_url):
    url = _health_url("api")
    settings = Settings(redis_url=redis_url)
    with LiveServer(settings) as server:
        here = (url.netloc, f"127.0.0.1:{server.port}")
        assert _run_health_check("api", dict(os.environ), here) == 0
    assert _run_health_check("api", dict(os.environ), here) != 0


def test_compose_volumes_are_declared():
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
