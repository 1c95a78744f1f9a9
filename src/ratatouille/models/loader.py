"""Find and validate a workspace's models: SQL files with header comments and YAML sidecars,
and Python pipelines decorated with ``@pipeline``.

Validation collects every problem (file and line each) before raising, so a user fixes a
broken project in one pass.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ratatouille.config import LAYERS, read_yaml, validate
from ratatouille.errors import ConfigError, Problem
from ratatouille.models.config import Materialized, ModelConfig

_HEADER = re.compile(r"^\s*--\s*@([a-z_]+)\s*:\s*(.*?)\s*$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Model:
    """One model: ``layer.name`` built by SQL or by a Python function."""

    layer: str
    name: str
    path: Path
    config: ModelConfig
    sql: str | None = None
    function: Callable[..., Any] | None = None
    yaml_path: Path | None = None
    lines: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """``layer.name``."""
        return f"{self.layer}.{self.name}"

    @property
    def kind(self) -> str:
        """``sql`` or ``python``."""
        return "python" if self.function is not None else "sql"

    @property
    def materialized(self) -> Materialized:
        """How the result is kept."""
        return self.config.materialized


@dataclass(frozen=True)
class PipelineSpec:
    """What ``@pipeline`` records on a Python function."""

    name: str
    layer: str
    config: dict[str, Any]


def pipeline(
    name: str | None = None,
    *,
    layer: str = "bronze",
    schedule: str | None = None,
    tags: list[str] | None = None,
    description: str = "",
    **config: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a Python pipeline that writes ``<layer>.<name>`` with the ``rat`` helpers.

    Example::

        @pipeline(name="raw_sales", layer="bronze", schedule="0 * * * *")
        def ingest_sales():
            for path in rat.ls("landing/sales/*.xlsx"):
                ...
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        spec = PipelineSpec(
            name=name or function.__name__,
            layer=layer,
            config={"schedule": schedule, "tags": tags or [], "description": description, **config},
        )
        function.__rat_pipeline__ = spec  # type: ignore[attr-defined]
        return function

    return decorate


def parse_header(text: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Read ``-- @key: value`` lines from the top of a SQL file (values are YAML scalars or lists)."""
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        match = _HEADER.match(line)
        if not match:
            continue
        key, raw = match.group(1), match.group(2)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        values[key] = value
        lines[key] = number
    return values, lines


def load_models(workspace_dir: Path, layers: tuple[str, ...] = LAYERS) -> dict[str, Model]:
    """Load every model of a workspace, keyed ``layer.name``.

    Raises:
        ConfigError: listing every problem found (file:line each).
    """
    models, problems = collect_models(workspace_dir, layers)
    if problems:
        raise ConfigError(problems)
    return models


def collect_models(
    workspace_dir: Path, layers: tuple[str, ...] = LAYERS, disabled: dict[str, Path] | None = None
) -> tuple[dict[str, Model], list[Problem]]:
    """Load every valid model, and the problems of the invalid ones (so callers can report all).

    Models with ``enabled: false`` are left out; their keys and files go to ``disabled``.
    """
    problems: list[Problem] = []
    models: dict[str, Model] = {}
    root = workspace_dir / "pipelines"
    for layer_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        layer = layer_dir.name
        if layer not in layers:
            problems.append(Problem(str(layer_dir), None, "", f"unknown layer `{layer}`; layers: {', '.join(layers)}"))
            continue
        for path in sorted(layer_dir.iterdir()):
            if path.suffix == ".sql":
                model = _load_sql(path, layer, problems)
            elif path.suffix == ".py" and not path.name.startswith("_"):
                for model in _load_python(path, layer, problems):
                    _add(models, model, problems, disabled)
                continue
            elif path.suffix in (".yaml", ".yml"):
                if not path.with_suffix(".sql").exists() and not _is_python_sidecar(path):
                    problems.append(
                        Problem(
                            str(path), 1, "", f"no `{path.stem}.sql` beside this file; sidecars configure SQL models"
                        )
                    )
                continue
            else:
                continue
            if model is not None:
                _add(models, model, problems, disabled)
    return models, problems


def _is_python_sidecar(path: Path) -> bool:
    return path.with_suffix(".py").exists()


def _add(models: dict[str, Model], model: Model, problems: list[Problem], disabled: dict[str, Path] | None) -> None:
    if not model.config.enabled:
        if disabled is not None:
            disabled[model.key] = model.path
        return  # `enabled: false`: the model is not part of the DAG
    if model.key in models:
        other = models[model.key]
        problems.append(Problem(str(model.path), None, "", f"model `{model.key}` is also defined in {other.path}"))
        return
    models[model.key] = model


def _load_sql(path: Path, layer: str, problems: list[Problem]) -> Model | None:
    text = path.read_text(encoding="utf-8")
    header, header_lines = parse_header(text)
    sidecar = path.with_suffix(".yaml")
    if not sidecar.exists():
        sidecar = path.with_suffix(".yml")
    data: dict[str, Any] = {}
    yaml_lines: dict[tuple[str | int, ...], int] = {}
    yaml_path: Path | None = None
    if sidecar.exists():
        yaml_path = sidecar
        try:
            loaded, yaml_lines = read_yaml(sidecar)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None
        if loaded is not None and not isinstance(loaded, dict):
            problems.append(Problem(str(sidecar), 1, "", "must be a mapping of keys to values"))
            return None
        data = dict(loaded or {})
    count = len(problems)
    for key, value in header.items():
        if key in data and _normalise(data[key]) != _normalise(value):
            problems.append(
                Problem(
                    str(path),
                    header_lines[key],
                    key,
                    f"is `{value}` here but `{data[key]}` in {sidecar.name}:{yaml_lines.get((key,), '?')}; "
                    "keep one of them",
                )
            )
    merged = {**header, **data}
    # Header problems point at the SQL file, sidecar problems at the YAML file.
    header_problems: list[Problem] = []
    config = validate(ModelConfig, dict(merged), str(yaml_path or path), yaml_lines, header_problems)
    for problem in header_problems:
        top = problem.key.split(".")[0]
        if top in header and top not in data:
            problem = Problem(str(path), header_lines[top], problem.key, problem.message)
        problems.append(problem)
    if len(problems) > count or config is None:
        return None
    assert isinstance(config, ModelConfig)
    name = config.name or path.stem
    if not _NAME.match(name):
        problems.append(
            Problem(str(path), header_lines.get("name"), "name", f"`{name}` must be lower-case letters, digits, _")
        )
        return None
    return Model(layer, name, path, config, sql=text, yaml_path=yaml_path, lines=header_lines)


def _normalise(value: Any) -> Any:
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.strip("[]").split(",")]
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and len(value) == 1:
        return _normalise(value[0])
    return value


def _load_python(path: Path, layer: str, problems: list[Problem]) -> list[Model]:
    module_name = f"rat_pipeline_{layer}_{path.stem}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        problems.append(Problem(str(path), None, "", "cannot be imported as a Python module"))
        return []
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        line = _traceback_line(exc, path)
        problems.append(Problem(str(path), line, "", f"importing it failed: {type(exc).__name__}: {exc}"))
        return []
    models = []
    for value in vars(module).values():
        found: PipelineSpec | None = getattr(value, "__rat_pipeline__", None)
        if found is None:
            continue
        target_layer = found.layer
        if target_layer != layer:
            problems.append(
                Problem(
                    str(path), None, "", f"pipeline `{found.name}` says layer `{target_layer}` but lives in {layer}/"
                )
            )
            continue
        config_problems: list[Problem] = []
        config_data = {k: v for k, v in found.config.items() if v not in (None, "", [])}
        config = validate(ModelConfig, config_data, str(path), {}, config_problems)
        problems.extend(config_problems)
        if config is None:
            continue
        models.append(Model(layer, found.name, path, config, function=value))
    return models


def _traceback_line(exc: BaseException, path: Path) -> int | None:
    frame = user_frame(exc, path)
    if frame is None and isinstance(exc, SyntaxError):
        return exc.lineno
    return frame.lineno if frame is not None else None


def user_frame(exc: BaseException, path: Path) -> traceback.FrameSummary | None:
    """The deepest frame of the traceback that is in the user's file ``path``: where their code
    raised, or called what raised."""
    frames = user_frames(exc, path)
    return frames[-1] if frames else None


def user_frames(exc: BaseException, path: Path) -> list[traceback.FrameSummary]:
    """The frames of the traceback that are in the user's file ``path``, outermost first."""
    return [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]


def load_macros(workspace_dir: Path) -> dict[str, str]:
    """``macros/*.sql`` by file name."""
    folder = workspace_dir / "macros"
    if not folder.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.sql"))}
