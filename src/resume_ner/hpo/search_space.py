"""Search spaces: ``{dotted config path: {type, min, max, step, values}}`` -> validated specs -> Optuna suggestions.

A spec is one of::

    training.learning_rate: {type: log_uniform, min: 1.0e-5, max: 3.0e-4}
    model.dropout:          {type: uniform, min: 0.0, max: 0.3, step: 0.05}   # step optional
    training.epochs:        {type: int, min: 2, max: 5, step: 1}               # step optional
    training.batch_size:    {type: choice, values: [8, 16]}

Only ``model.*`` and ``training.*`` settings can be tuned (the data is loaded once per sweep). Every
problem of every spec is reported at once in one ``ConfigError``, before anything is trained. The
sampled values are parameters named by their dotted path (``trial.params["training.learning_rate"]``);
``apply_params`` is the one function that merges such a dict into a config.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union, cast, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from resume_ner.config import ResumeNerConfig, config_from_dict
from resume_ner.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    from typing_extensions import TypeForm

SPEC_TYPES = ("log_uniform", "uniform", "int", "choice")
SPEC_KEYS = ("type", "min", "max", "step", "values")
TUNABLE_SECTIONS = ("model", "training")
_NUMERIC_KEYS = ("min", "max", "step")
_CHOICE_TYPES = (str, int, float, bool, type(None))  # what Optuna stores as a categorical value


@dataclass(frozen=True)
class ParamSpec:
    """One tuned setting: its dotted config path and distribution."""

    path: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    values: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Draw this parameter from an Optuna trial (a fixed value when the trial is enqueued or retried)."""
        if self.type == "choice":
            return trial.suggest_categorical(self.path, list(self.values))
        low, high = self._bounds()
        if self.type == "int":
            return trial.suggest_int(self.path, int(low), int(high), step=int(self.step or 1))
        if self.type == "log_uniform":
            return trial.suggest_float(self.path, float(low), float(high), log=True)
        return trial.suggest_float(self.path, float(low), float(high), step=self.step)

    def _bounds(self) -> tuple[float | int, float | int]:
        """``(low, high)`` of a numeric parameter; parsing a spec sets both."""
        if self.low is None or self.high is None:
            raise TypeError(f"{self.path}: a {self.type} parameter without min and max")
        return self.low, self.high


@dataclass(frozen=True)
class SearchSpace:
    """The validated specs of a search space, in the order they were given."""

    params: tuple[ParamSpec, ...]

    @property
    def paths(self) -> list[str]:
        """The dotted config paths tuned by this space."""
        return [spec.path for spec in self.params]

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """One value per parameter, drawn from ``trial``: ``{dotted path: value}``."""
        return {spec.path: spec.suggest(trial) for spec in self.params}

    def grid(self) -> dict[str, list[Any]]:
        """``{path: values}`` for Optuna's ``GridSampler``; only for a space made of ``choice`` specs."""
        others = [f"{spec.path} ({spec.type})" for spec in self.params if spec.type != "choice"]
        if others:
            raise ConfigError(
                "hpo.sampler=grid needs every hpo.search_space entry to be {type: choice, values: [...]}; "
                f"not a choice: {', '.join(others)}. Use choices, or hpo.sampler=tpe|random"
            )
        return {spec.path: list(spec.values) for spec in self.params}


def parse_search_space(raw: dict[str, Any], base: ResumeNerConfig) -> SearchSpace:
    """Validate ``raw`` (``HpoConfig.search_space``) against the fields of ``base``; every problem at once."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"hpo.search_space: expected a mapping of dotted config paths to specs, got {type(raw).__name__}"
        )
    if not raw:
        raise ConfigError(
            "hpo.search_space is empty: add at least one setting to tune, "
            "e.g. training.learning_rate: {type: log_uniform, min: 1.0e-5, max: 3.0e-4}"
        )
    problems: list[str] = []
    specs: list[ParamSpec] = []
    for path, spec in raw.items():
        found = _parse_spec(str(path), spec, base, problems)
        if found is not None:
            specs.append(found)
    if problems:
        raise ConfigError(f"invalid hpo.search_space: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return SearchSpace(tuple(specs))


def apply_params(config: ResumeNerConfig, params: dict[str, Any]) -> ResumeNerConfig:
    """``config`` with each ``{dotted path: value}`` of ``params`` set, validated as a whole (``ConfigError``)."""
    raw = config.to_dict()
    for path, value in params.items():
        *parents, name = path.split(".")
        node = raw
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(
                    f"hpo parameter {path!r}: {part!r} is not a config section; "
                    "expected a dotted path like training.learning_rate"
                )
            node = child
        node[name] = value
    return config_from_dict(raw, origin="hpo parameters " + ", ".join(f"{k}={v!r}" for k, v in params.items()))


# --- validation -------------------------------------------------------------------------------------------


def _field_adapter(path: str, base: ResumeNerConfig) -> tuple[TypeAdapter | None, Any, str | None]:
    """(validator of the field's values, its annotation, problem) for a dotted ``section.field`` path."""
    parts = path.split(".")
    if len(parts) != 2 or parts[0] not in TUNABLE_SECTIONS:
        return (
            None,
            None,
            (f"{path}: not a tunable setting; use model.<field> or training.<field>, e.g. training.learning_rate"),
        )
    section = getattr(base, parts[0])
    fields = type(section).model_fields
    if parts[1] not in fields:
        return None, None, f"{path}: unknown setting; {parts[0]} has: {', '.join(sorted(fields))}"
    info = fields[parts[1]]
    # the field's type with its constraints, built at run time: a type form mypy cannot read statically
    field_type = cast("TypeForm[Any]", Annotated[info.annotation, info])
    return TypeAdapter(field_type), info.annotation, None


def _number_kind(annotation: Any) -> str | None:
    """``"int"``, ``"float"`` or None (not numeric) for a field annotation such as ``int | None``."""
    args = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    if float in args:
        return "float"
    if int in args:
        return "int"
    return None


def _check_value(path: str, what: str, value: Any, adapter: TypeAdapter, problems: list[str]) -> Any:
    """``value`` as the field parses it (e.g. YAML's string ``1e-5`` -> float), or None with a problem."""
    try:
        parsed = adapter.validate_python(value)
    except ValidationError as exc:
        reasons = "; ".join(err["msg"] for err in exc.errors())
        problems.append(f"{path}: {what} {value!r} is not a valid value of this setting: {reasons}")
        return None
    if isinstance(value, bool) and not isinstance(parsed, bool):
        problems.append(f"{path}: {what} {value!r} is a boolean, but this setting is a number")
        return None
    return parsed


def _parse_spec(path: str, spec: Any, base: ResumeNerConfig, problems: list[str]) -> ParamSpec | None:
    """The ``ParamSpec`` of one entry, or None after appending its problems."""
    before = len(problems)
    adapter, annotation, problem = _field_adapter(path, base)
    if problem:
        problems.append(problem)
    if not isinstance(spec, dict):
        problems.append(f"{path}: expected a mapping like {{type: uniform, min: 0.0, max: 0.3}}, got {spec!r}")
        return None
    unknown = sorted(set(map(str, spec)) - set(SPEC_KEYS))
    if unknown:
        problems.append(f"{path}: unknown key(s) {', '.join(unknown)}; a spec has {', '.join(SPEC_KEYS)}")
    kind = spec.get("type")
    if kind not in SPEC_TYPES:
        problems.append(f"{path}: type {kind!r} is not one of {', '.join(SPEC_TYPES)}")
        return None
    if kind == "choice":
        values = _parse_choice(path, spec, adapter, problems)
        return ParamSpec(path, kind, values=values) if len(problems) == before else None
    low, high, step = _parse_bounds(path, kind, spec, adapter, annotation, problems)
    return ParamSpec(path, kind, low, high, step) if len(problems) == before else None


def _parse_choice(path: str, spec: dict[str, Any], adapter: TypeAdapter | None, problems: list[str]) -> tuple:
    extra = [key for key in _NUMERIC_KEYS if key in spec]
    if extra:
        problems.append(f"{path}: a choice takes 'values' only, not {', '.join(extra)}")
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        problems.append(f"{path}: a choice needs a non-empty list of values, got {values!r}")
        return ()
    parsed = []
    for value in values:
        if not isinstance(value, _CHOICE_TYPES):
            problems.append(f"{path}: choice value {value!r} must be a number, string, boolean or null")
            continue
        if adapter is not None:
            value = _check_value(path, "choice value", value, adapter, problems)
        parsed.append(value)
    return tuple(parsed)


def _parse_bounds(
    path: str, kind: str, spec: dict[str, Any], adapter: TypeAdapter | None, annotation: Any, problems: list[str]
) -> tuple[Any, Any, Any]:
    """(min, max, step) of a numeric spec, each checked; problems appended."""
    before = len(problems)
    if "values" in spec:
        problems.append(f"{path}: 'values' belongs to type choice; a {kind} takes min, max and step")
    if adapter is not None:
        number_kind = _number_kind(annotation)
        if number_kind is None:
            problems.append(f"{path}: type {kind} needs a numeric setting; use type choice for this one")
            adapter = None
        elif number_kind == "int" and kind != "int":
            problems.append(f"{path}: the setting is an integer; use type int (or choice), not {kind}")
            adapter = None
    bounds: dict[str, Any] = {}
    for key in _NUMERIC_KEYS:
        value = spec.get(key)
        if value is None:
            if key != "step":
                problems.append(f"{path}: {kind} needs '{key}'")
            continue
        number = _as_number(value)
        if number is None:
            problems.append(f"{path}: {key} {value!r} is not a number")
        elif kind == "int" and number != int(number):
            problems.append(f"{path}: {key} {value!r} must be an integer for type int")
        else:
            bounds[key] = int(number) if kind == "int" else number
    low, high, step = bounds.get("min"), bounds.get("max"), bounds.get("step")
    if low is not None and high is not None and low >= high:
        problems.append(f"{path}: min ({low}) must be below max ({high})")
    if kind == "log_uniform":
        for key in ("min", "max"):
            if bounds.get(key) is not None and bounds[key] <= 0:
                problems.append(f"{path}: {key} ({bounds[key]}) must be positive on a log scale")
        if step is not None:
            problems.append(f"{path}: log_uniform takes no step (Optuna samples a log scale continuously)")
    if step is not None and step <= 0:
        problems.append(f"{path}: step ({step}) must be positive")
    if adapter is not None and len(problems) == before:  # bounds against the field's own limits
        for key in ("min", "max"):
            if bounds.get(key) is not None:
                _check_value(path, key, bounds[key], adapter, problems)
    return low, high, step


def _as_number(value: Any) -> float | None:
    """A finite int/float, or a numeric string (YAML reads ``1e-5`` without a dot as a string); else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return value if math.isfinite(value) else None
