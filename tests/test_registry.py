"""The model registry: TOML files, clear errors, API keys from the environment or .env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clonechat.errors import ConfigError
from clonechat.registry import ProviderPool, Registry, api_key, load_registry

GOOD = """
[models.vllm]
provider = "openai-compatible"
base_url = "http://127.0.0.1:8000/v1"
model = "meta-llama/Llama-3.1-8B-Instruct"
api_key_env = "VLLM_KEY"
display_name = "Llama"
max_connections = 4
[models.vllm.defaults]
temperature = 0.5
max_tokens = 99
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_models_file_is_merged_with_builtins(tmp_path: Path) -> None:
    models = load_registry(write(tmp_path, GOOD))
    assert {"local", "scripted", "vllm"} <= set(models)
    spec = models["vllm"]
    assert (spec.provider, spec.model_id, spec.max_connections, spec.display_name) == (
        "openai-compatible",
        "meta-llama/Llama-3.1-8B-Instruct",
        4,
        "Llama",
    )
    assert (spec.defaults.temperature, spec.defaults.max_tokens) == (0.5, 99)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.x]\nprovider = 'openai'\n", "provider must be local, openai-compatible or anthropic"),
        ("[models.x]\nprovider = 'anthropic'\nmodel = 'c'\n", "'base_url' is required"),
        ("[models.x]\nprovider = 'local'\ncolour = 1\n", "unknown key 'colour'"),
        ("[models.x]\nprovider = 'local'\n[models.x.defaults]\nwarmth = 1\n", "defaults"),
        ("[models.x\n", "not valid TOML"),
        ("models = 3\n", "must be a table"),
    ],
)
def test_malformed_registry_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_registry(write(tmp_path, text))
    assert str(tmp_path / "models.toml") in str(info.value)


def test_missing_models_file_and_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models file not found"):
        load_registry(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"unknown model 'gpt' \(known: local, scripted"):
        Registry().get("gpt")


def test_api_key_from_environment_then_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_registry(write(tmp_path, GOOD))["vllm"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="set the environment variable VLLM_KEY"):
        api_key(spec, env={})
    (tmp_path / ".env").write_text("VLLM_KEY=from-dotenv\n")
    assert api_key(spec, env={}) == "from-dotenv"
    assert api_key(spec, env={"VLLM_KEY": "from-env"}) == "from-env"


def test_missing_key_is_refused_before_any_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLLM_KEY", raising=False)
    spec = load_registry(write(tmp_path, GOOD))["vllm"]
    with pytest.raises(ConfigError, match="needs an API key"):
        ProviderPool().get(spec)


def test_models_command_lists_and_checks(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("8000", "9"))  # port 9 on loopback: nothing listens
    env = {**os.environ, "COLUMNS": "250", "VLLM_KEY": "sk-never-shown", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "clonechat", "models", "--models-file", str(path)]
    listing = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "vllm" in listing.stdout
    assert "$VLLM_KEY (set)" in listing.stdout
    assert "sk-never-shown" not in listing.stdout + listing.stderr
    checked = subprocess.run([*command, "--check"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert checked.returncode == 1  # one model does not answer
    assert "connection failed" in checked.stdout
    assert "ok (" in checked.stdout  # the embedded model and the scripted one do
    assert "sk-never-shown" not in checked.stdout + checked.stderr
