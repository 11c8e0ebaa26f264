"""The model registry: TOML files, clear errors, API keys from the environment or .env."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from clonechat.errors import ConfigError
from clonechat.providers.base import GenerationParams
from clonechat.providers.embedded import EMBEDDED_DEFAULTS
from clonechat.registry import PROVIDERS, ModelsFileError, ProviderPool, Registry, api_key, load_registry
from clonechat.registry_file import FILE_PROVIDERS, ModelDefaults, ModelEntry

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
        ("[models.x]\nprovider = 'openai'\n", "provider must be local, openai-compatible, anthropic or scripted"),
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


EVERY_KEY = """
[models.full]
provider = "anthropic"
base_url = "https://api.anthropic.com"
model = "claude-x"
api_key_env = "ANTHROPIC_KEY"
display_name = "Claude"
max_connections = 3
stream = false
idle_timeout = 12.5
retry_budget = 0
[models.full.defaults]
temperature = 1
max_tokens = 77
top_p = 0.9
repeat_penalty = 1.1
seed = 42

[models.tiny]
provider = "local"
[models.tiny.defaults]
max_tokens = 5
"""


def test_every_key_is_read(tmp_path: Path) -> None:
    models = load_registry(write(tmp_path, EVERY_KEY))
    full = models["full"]
    assert (full.name, full.provider, full.base_url, full.model_id, full.api_key_env, full.display_name) == (
        "full",
        "anthropic",
        "https://api.anthropic.com",
        "claude-x",
        "ANTHROPIC_KEY",
        "Claude",
    )
    assert (full.max_connections, full.stream, full.idle_timeout, full.retry_budget) == (3, False, 12.5, 0.0)
    assert full.defaults == GenerationParams(temperature=1.0, max_tokens=77, top_p=0.9, repeat_penalty=1.1, seed=42)
    assert full.source == str(tmp_path / "models.toml")
    # Left out: the defaults (the embedded model's for local), and display_name from model or name.
    tiny = models["tiny"]
    assert tiny.defaults == replace(EMBEDDED_DEFAULTS, max_tokens=5)
    assert (tiny.display_name, tiny.max_connections, tiny.stream, tiny.idle_timeout, tiny.retry_budget) == (
        "tiny",
        8,
        True,
        60.0,
        300.0,
    )
    assert load_registry(write(tmp_path, GOOD.replace('display_name = "Llama"\n', "")))["vllm"].display_name == (
        "meta-llama/Llama-3.1-8B-Instruct"
    )


def test_the_file_format_knows_every_key_of_the_spec() -> None:
    assert set(ModelEntry.model_fields) == {
        "provider",
        "base_url",
        "model",
        "api_key_env",
        "display_name",
        "max_connections",
        "stream",
        "idle_timeout",
        "retry_budget",
        "reasoning_effort",
        "thinking",
        "think_tags",
        "prompt_caching",
        "prompt_logprobs",
        "chat_template",
        "prices",
        "defaults",
    }
    assert set(ModelDefaults.model_fields) == set(GenerationParams.__dataclass_fields__)


def test_one_list_of_providers() -> None:
    assert PROVIDERS == ("local", "openai-compatible", "anthropic", "scripted")
    assert PROVIDERS == FILE_PROVIDERS  # a file may name the scripted test double (to give it prices)


SERVER = '[models.m]\nprovider = "openai-compatible"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "x"\n'
LOCAL = '[models.m]\nprovider = "local"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the rules
        (SERVER + "max_connections = 0\n", ":5: models.m: max_connections must be at least 1 (got 0)"),
        (SERVER + "idle_timeout = 0\n", ":5: models.m: idle_timeout must be greater than 0 (got 0)"),
        (SERVER + "retry_budget = -1.5\n", ":5: models.m: retry_budget must be at least 0 (got -1.5)"),
        (
            '[models.m]\nprovider = "anthropic"\nmodel = "c"\n',
            ":1: models.m: 'base_url' is required for provider anthropic",
        ),
        (
            '[models.m]\nprovider = "openai-compatible"\nbase_url = "http://h/v1"\n',
            ":1: models.m: 'model' is required for provider openai-compatible",
        ),
        (SERVER.replace('"x"', '""'), ":4: models.m: model must not be empty"),
        (LOCAL + 'api_key_env = ""\n', ":3: models.m: api_key_env must not be empty"),
        ('[models.m]\nmodel = "x"\n', ":1: models.m: required key 'provider' is missing"),
        (LOCAL + "[models.m.defaults]\ntemperature = 2.5\n", ":4: models.m: defaults.temperature must be at most 2"),
        (LOCAL + "[models.m.defaults]\nmax_tokens = 0\n", ":4: models.m: defaults.max_tokens must be at least 1"),
        (LOCAL + "[models.m.defaults]\ntop_p = 0\n", ":4: models.m: defaults.top_p must be greater than 0"),
        (LOCAL + "[models.m.defaults]\nrepeat_penalty = 0\n", ":4: models.m: defaults.repeat_penalty must be greater"),
        # unknown providers, listing the valid ones
        (
            '[models.m]\nprovider = "openai"\n',
            ':2: models.m: provider must be local, openai-compatible, anthropic or scripted (got "openai")',
        ),
        # unknown keys
        (
            LOCAL + "colour = 1\n",
            ":3: models.m: unknown key 'colour' (known keys: api_key_env, base_url, chat_template, defaults,",
        ),
        (
            LOCAL + "max_conections = 1\n",
            ":3: models.m: unknown key 'max_conections' (did you mean 'max_connections'?)",
        ),
        (
            LOCAL + "[models.m.defaults]\ntemprature = 1\n",
            ":4: models.m: unknown key 'temprature' in defaults (did you mean 'temperature'?)",
        ),
        ('colour = "red"\n' + LOCAL, ":1: unknown key 'colour' (known keys: models)"),
        # wrong types
        (SERVER + 'max_connections = "8"\n', ':5: models.m: max_connections must be an integer (got "8")'),
        (SERVER + "max_connections = 2.5\n", ":5: models.m: max_connections must be an integer (got 2.5)"),
        (SERVER + 'stream = "yes"\n', ':5: models.m: stream must be true or false (got "yes")'),
        (SERVER + "idle_timeout = true\n", ":5: models.m: idle_timeout must be a number (got true)"),
        (LOCAL + "display_name = 3\n", ":3: models.m: display_name must be a string (got 3)"),
        (LOCAL + 'defaults = "warm"\n', ':3: models.m: defaults must be a table (got "warm")'),
        (LOCAL + "[models.m.defaults]\ntemperature = 'hot'\n", ":4: models.m: defaults.temperature must be a number"),
        ("models = { m = 1 }\n", ":1: models.m: must be a table (got 1)"),
        ("models = 3\n", ":1: models must be a table of [models.NAME] tables (got 3)"),
        # several problems: the first, and how many more
        (
            SERVER + 'stream = "yes"\nidle_timeout = 0\n',
            'stream must be true or false (got "yes") (and 1 more problem)',
        ),
        # syntax
        ("[models.m]\nprovider = 'local\n", ":2: not valid TOML: "),
        (LOCAL + "[models.m.defaults\nseed = 1\n", ":3: not valid TOML: "),
    ],
)
def test_each_rule_is_one_line_naming_file_model_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"{path}:")
    assert message in line
    if isinstance(info.value, ModelsFileError):
        assert line.endswith(info.value.reason)


def test_a_later_file_overrides_an_earlier_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".config" / "clonechat").mkdir(parents=True)
    user = home / ".config" / "clonechat" / "models.toml"
    user.write_text(SERVER + '[models.only-user]\nprovider = "local"\n[models.local]\nprovider = "local"\n')
    project = tmp_path / "project"
    project.mkdir()
    (project / "models.toml").write_text(SERVER.replace("127.0.0.1:9", "project:1"))
    named = write(tmp_path, SERVER.replace("127.0.0.1:9", "named:2"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    monkeypatch.delenv("CLONECHAT_MODELS", raising=False)

    models = load_registry()
    assert (models["m"].base_url, models["m"].source) == ("http://project:1/v1", "models.toml")
    assert models["only-user"].source == str(user)
    assert models["local"].source == str(user)  # a file may replace a built-in model too
    models = load_registry(named)
    assert (models["m"].base_url, models["m"].source) == ("http://named:2/v1", str(named))
    monkeypatch.setenv("CLONECHAT_MODELS", str(named))
    assert load_registry()["m"].base_url == "http://named:2/v1"
    # A broken earlier file is reported even when a later one defines the same model.
    user.write_text(SERVER + "max_connections = 0\n")
    with pytest.raises(ConfigError, match="max_connections must be at least 1"):
        load_registry(named)


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
