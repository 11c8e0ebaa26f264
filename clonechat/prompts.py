"""Prompt templates: TOML files with declared variables, rendered with ``string.Template``.

Templates live in the repository's ``prompts/`` folder (also shipped inside the wheel). A
template declares every variable it uses, so a typo in a template or a missing value is caught
before any model is called, with a message naming the file and the variable.
"""

from __future__ import annotations

import hashlib
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clonechat.errors import TemplateError

_PACKAGE_DIR = Path(__file__).resolve().parent
#: Source checkout (editable install) first, then the copy bundled into the wheel.
_DEFAULT_PROMPT_DIRS = (_PACKAGE_DIR.parent / "prompts", _PACKAGE_DIR / "_prompts")


def default_prompts_dir() -> Path:
    """The prompts folder of this installation."""
    for candidate in _DEFAULT_PROMPT_DIRS:
        if candidate.is_dir():
            return candidate
    raise TemplateError(f"no prompts folder found (looked in {', '.join(map(str, _DEFAULT_PROMPT_DIRS))})")


def content_hash(text: str) -> str:
    """SHA-256 of ``text`` as hex: the key under which prompts are stored once."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Variable:
    name: str
    description: str
    default: str | None = None


@dataclass(frozen=True)
class RenderedPrompt:
    """A template filled in: the exact text a model sees, and where it came from."""

    template: PromptTemplate
    text: str
    values: Mapping[str, str]

    @property
    def hash(self) -> str:
        return content_hash(self.text)


@dataclass(frozen=True)
class PromptTemplate:
    """One template file. ``kind`` is its folder (``conditions``, ``openings``, ...)."""

    kind: str
    name: str
    path: Path
    description: str
    source: str
    variables: Mapping[str, Variable] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def hash(self) -> str:
        """Hash of the template file's text, so an edited template is a different template."""
        return content_hash(self.path.read_text(encoding="utf-8"))

    def render(self, values: Mapping[str, object]) -> RenderedPrompt:
        """Fill the template. Values for variables the template does not declare are ignored,
        so callers can pass the standard set to every template; a declared variable with
        neither a value nor a default is an error."""
        resolved: dict[str, str] = {}
        for name, var in self.variables.items():
            if name in values:
                resolved[name] = str(values[name])
            elif var.default is not None:
                resolved[name] = var.default
            else:
                raise TemplateError(f"template {self.label} ({self.path}): no value for variable '{name}'")
        try:
            text = string.Template(self.source).substitute(resolved)
        except (KeyError, ValueError) as exc:  # pragma: no cover - prevented by load-time checks
            raise TemplateError(f"template {self.label} ({self.path}): {exc}") from exc
        return RenderedPrompt(template=self, text=text, values=resolved)


def _parse_variables(path: Path, raw: object) -> dict[str, Variable]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TemplateError(f"{path}: [variables] must be a table")
    variables: dict[str, Variable] = {}
    for name, spec in raw.items():
        if isinstance(spec, str):
            variables[name] = Variable(name, spec)
        elif isinstance(spec, dict) and isinstance(spec.get("description", ""), str):
            default = spec.get("default")
            if default is not None and not isinstance(default, str | int | float):
                raise TemplateError(f"{path}: variable '{name}' has a default that is not text")
            variables[name] = Variable(name, spec.get("description", ""), None if default is None else str(default))
        else:
            raise TemplateError(f"{path}: variable '{name}' must be a description or a table with description/default")
    return variables


def load_template(path: Path, kind: str) -> PromptTemplate:
    """Read and check one template file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"template file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{path}: not valid TOML: {exc}") from None
    source = data.get("template")
    if not isinstance(source, str):
        raise TemplateError(f"{path}: missing 'template' text")
    variables = _parse_variables(path, data.get("variables"))
    template = string.Template(source)
    label = f"{kind}/{path.stem}"
    if not template.is_valid():
        raise TemplateError(f"template {label} ({path}): malformed placeholder (use $name, ${{name}} or $$)")
    for used in template.get_identifiers():
        if used not in variables:
            raise TemplateError(f"template {label} ({path}): unknown variable '{used}' (declare it under [variables])")
    description = data.get("description", "")
    return PromptTemplate(kind, path.stem, path, str(description), source, variables)


class PromptLibrary:
    """Looks templates up by kind and name in a prompts folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_prompts_dir()

    def names(self, kind: str) -> list[str]:
        return sorted(p.stem for p in (self.root / kind).glob("*.toml"))

    def get(self, kind: str, name: str) -> PromptTemplate:
        path = self.root / kind / f"{name}.toml"
        if not path.is_file():
            known = ", ".join(self.names(kind)) or "none"
            raise TemplateError(f"unknown {kind[:-1] if kind.endswith('s') else kind} '{name}' (known: {known})")
        return load_template(path, kind)
