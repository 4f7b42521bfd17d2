"""Shared helpers of the compose and broker-script tests."""

import json
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"


def _compose_binary() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail(
            "docker-compose (the compose parser) is not installed: run deploy/setup.sh "
            "or apt-get install docker-compose"
        )
    return path


def compose(args, compose_file=COMPOSE_FILE, env=None, check=True):
    """Runs `docker-compose -f <file> <args>` and returns the CompletedProcess."""
    proc = subprocess.run(
        [_compose_binary(), "-f", str(compose_file), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"docker-compose {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def resolved_config(profiles=(), env=None, compose_file=COMPOSE_FILE) -> dict:
    """The file as the compose parser resolves it (`docker-compose config`), as a dict.

    The YAML output is read with the PyYAML of the interpreter that runs
    docker-compose itself (its shebang), so no extra package is needed here.
    """
    args = []
    for profile in profiles:
        args += ["--profile", profile]
    out = compose([*args, "config"], compose_file=compose_file, env=env).stdout
    interpreter = pathlib.Path(_compose_binary()).read_text().splitlines()[0]
    assert interpreter.startswith("#!"), "docker-compose is not a Python script"
    loader = subprocess.run(
        [*interpreter[2:].split(), "-c",
         "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=out,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(loader.stdout)
