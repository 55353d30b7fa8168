"""The search space file: YAML, validated with pydantic, then turned into trial configs.

A space has generic sections (study, sampler, scheduler, resources, search) and the sections of
its objective (for the default LoRA objective: model, data, training, lora, early_stopping),
which the objective's own pydantic model validates.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from objectives import DEFAULT_OBJECTIVE, Objective, get_objective
from objectives.base import DataError
from search.errors import InputError, closest, from_data, from_validation_error
from search.storage import check_storage_url, is_study_name, resolve_study

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"
Direction = Literal["minimize", "maximize"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudySection(Section):
    name: str | None = Field(None, description="Study name; defaults to the space file's name.")
    storage: str | None = Field(
        None,
        description="Optuna storage URL (sqlite:///..., postgresql://..., journal:PATH); "
        "defaults to SQLite in studies/<name>/optuna.db.",
    )
    metric: str | list[str] | None = Field(
        None, description="The reported metric the search optimises (one the objective "
        "declares; default: its first), or a list of them for a multi-objective search, whose "
        "scheduler stops trials on the first alone.")
    direction: Direction | list[Direction] | None = Field(
        None, description="Default: each metric's own (lower loss, higher accuracy); a list "
        "has one per metric.")
    n_trials: int = Field(20, gt=0, description="Trials in the study when the search ends.")
    max_concurrent_trials: int = Field(1, gt=0, description="Trials run at the same time.")
    time_budget_s: float | None = Field(
        None, gt=0, description="Seconds after the first trial starts in which trials may start; "
        "running ones then finish.")
    seed: int = 0
    reproducible: bool = Field(
        False, description="The same seed and space give the same trials and best value, also "
        "with concurrent trials: each trial is asked for once the trials asked "
        "max_concurrent_trials or more places before it have ended, and the sampler and ASHA "
        "see those alone (see search.searcher).")
    recommended: bool = Field(
        True, description="Run the objective's recommended setting (for LoRA: rank 16, alpha "
        "twice the rank, the learning rate in the middle of its range) right after the "
        "untuned default, where the space searches those parameters (see search.recommended).")
    warm_start: list[str] = Field(
        default_factory=list, description="Earlier studies (by name) of the same metrics "
        "whose finished trials join the sampler's history, and whose best configurations run "
        "after the untuned default (see search.warm_start).")
    warm_start_top_k: int = Field(3, ge=0, description="Best configurations of each earlier "
                                  "study to run again on this search's data.")
    # Set from metric and direction by the space's check (_check_metric): every objective,
    # the first (``metric``, ``direction`` after the check) being the one trials report on.
    _metrics: list[str] = PrivateAttr(default_factory=list)
    _directions: list[Direction] = PrivateAttr(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return self._metrics or [self.metric]

    @property
    def directions(self) -> list[Direction]:
        return self._directions or [self.direction]

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @field_validator("metric", mode="before")
    @classmethod
    def _metric_names(cls, value: Any) -> Any:
        names = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(name, str) for name in names):
            raise ValueError(f"{value!r}: a metric name, or a list of metric names")
        return value

    @field_validator("warm_start", mode="before")
    @classmethod
    def _study_names(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        for name in names if isinstance(names, list) else []:
            if not isinstance(name, str) or not is_study_name(name):
                raise ValueError(f"{name!r} is not a study name")
        return names

    @field_validator("direction", mode="before")
    @classmethod
    def _direction_names(cls, value: Any) -> Any:
        for index, name in enumerate(value if isinstance(value, list) else [value]):
            if value is not None and name not in ("minimize", "maximize"):
                at = f" (item {index})" if isinstance(value, list) else ""
                raise ValueError(f"{name!r}{at} is not a direction: minimize or maximize")
        return value

    @model_validator(mode="after")
    def _safe_name(self) -> StudySection:
        if self.storage is not None:
            check_storage_url(self.storage)
        if self.name is not None and not is_study_name(self.name):
            raise ValueError(
                f"study name {self.name!r} must be letters, digits, '_', '-' or '.', "
                "with no path separator or '..'"
            )
        return self


class SamplerSection(Section):
    name: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2", "nsga3"] = "tpe"
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the Optuna sampler."
    )


class SchedulerSection(Section):
    name: Literal["asha", "median", "none"] = "asha"
    grace_period: int = Field(20, gt=0, description="Steps a trial runs before it can be stopped.")
    reduction_factor: float = Field(3, gt=1, description="ASHA keeps 1/reduction_factor a rung.")
    max_t: int | None = Field(
        None, gt=0, description="Longest trial in steps; defaults to training.max_steps."
    )


class ResourcesSection(Section):
    cpu: float = Field(1, gt=0, description="CPU cores per trial (also its torch threads).")
    gpu: float = Field(0, ge=0, description="GPUs per trial; fractions share a GPU, and "
                       "several (a whole number) spread the model's layers over them.")

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, gpu: float) -> float:
        if gpu > 1 and not gpu.is_integer():
            raise ValueError(f"{gpu:g} GPUs: a fraction shares one GPU, above one use a whole "
                             "number")
        return gpu


class _Param(Section):
    when: dict[str, list[Any]] | None = Field(
        None, description="Suggest this parameter only when each named parameter has one of "
        "the listed values."
    )


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.step is not None and not _fits(self.high - self.low, self.step):
            raise ValueError(f"step {self.step} does not divide high - low")
        return self


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log scale needs step 1")
        if (self.high - self.low) % self.step:
            raise ValueError(f"step {self.step} does not fit the range {self.low}..{self.high}")
        return self


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[str | bool | int | float | None] = Field(min_length=1)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_range(low: float, high: float, log: bool) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, got {low}")


def _fits(span: float, step: float) -> bool:
    ratio = span / step
    return abs(ratio - round(ratio)) < 1e-9


class MlflowSection(Section):
    uri: str | None = Field(None, description="Tracking server (http://HOST:PORT) or store; "
                            "default: --mlflow, else the environment's MLFLOW_TRACKING_URI.")
    experiment: str | None = Field(None, description="MLflow experiment; default: the "
                                   "study's name.")
    artifact_location: str | None = Field(None, description="Where a new experiment keeps "
                                          "its artifacts; default: the server's choice (for a "
                                          "local store, ./mlruns).")


class WandbSection(Section):
    project: str = Field("ftsearch", description="W&B project; the runs are grouped by the "
                         "study's name.")
    entity: str | None = None
    mode: Literal["online", "offline"] = Field(
        "online", description="offline: run files under studies/<name>/wandb, for `wandb "
        "sync` later (the environment's WANDB_MODE also applies).")


class TrackingSection(Section):
    """Where else a search's trials appear (the study keeps them in any case)."""

    mlflow: MlflowSection | None = None
    wandb: WandbSection | None = None


class SpaceHead(Section):
    """The generic sections every space has; the objective's sections are validated apart."""

    objective: str = Field(DEFAULT_OBJECTIVE, description="The registered objective that "
                           "trains (objectives/__init__.py).")
    study: StudySection = Field(default_factory=StudySection)
    sampler: SamplerSection = Field(default_factory=SamplerSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    retry_on_oom: bool = False
    tracking: TrackingSection | None = Field(None, description="Experiment trackers each "
                                             "trial is also sent to (search.tracking).")
    search: dict[str, Param] = Field(default_factory=dict)


class SearchSpace:
    """A validated space: the generic head, the objective's defaults and the search section."""

    def __init__(self, source: Path, head: SpaceHead, objective: Objective, defaults: BaseModel):
        self.source, self.head, self.objective, self.defaults = source, head, objective, defaults

    @property
    def study_name(self) -> str:
        return self.head.study.name or self.source.stem

    def trial_config(self, params: dict[str, Any]) -> BaseModel:
        """The objective's config with the sampled parameters set at their dotted keys."""
        raw = self.defaults.model_dump()
        for key, value in params.items():
            _set_dotted(raw, key, value)
        try:
            return type(self.defaults).model_validate(raw)
        except ValidationError as error:
            raise from_validation_error(self.source, error) from None

    def fingerprint(self) -> str:
        """Identifies what trials of this space mean: the objective, its fixed config and the
        search section. Trials of two spaces with different fingerprints do not mix."""
        defaults = self.defaults.model_dump(mode="json")
        fresh = type(self.defaults)().model_dump(mode="json")
        for key in self.objective.added_sections:  # a section, or a dotted key in one
            *parents, last = key.split(".")
            here, there = defaults, fresh
            for part in parents:
                here, there = here.get(part, {}), there.get(part, {})
            if here.get(last) == there.get(last):
                here.pop(last, None)
        content = {
            "objective": self.head.objective,
            "defaults": defaults,
            "search": {k: v.model_dump(mode="json") for k, v in self.head.search.items()},
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def baseline_params(self) -> dict[str, Any]:
        """The untuned configuration: each searched key at its value in the fixed sections."""
        raw = self.defaults.model_dump()
        params = {}
        for key, param in self.head.search.items():
            if is_active(param, params):
                value = _get_dotted(raw, key)
                if value is not None:
                    params[key] = value
        return params


def resolve_space_path(name_or_path: str) -> Path:
    """A bare name (no path separator) is looked up in spaces/; anything else is a path."""
    path = Path(name_or_path)
    if path.parent == Path(".") and not path.exists():
        path = SPACES_DIR / name_or_path
    if not path.is_file():
        raise InputError(name_or_path, "", "no such space file")
    return path


def load_space(name_or_path: str, objective_checks: bool = True) -> SearchSpace:
    """Read, validate and cross-check a space file; raises InputError on any bad input.

    ``objective_checks=False`` leaves out ``check_space``: the objective's checks of its data
    and of every value the search may pick, which import its training libraries. A search
    runs them itself, while Ray starts (search/preparation.py).
    """
    path = resolve_space_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise InputError(path, where, f"invalid YAML: {getattr(error, 'problem', error)}") from None
    except UnicodeDecodeError:
        raise InputError(path, "", "not UTF-8 text") from None
    if not isinstance(raw, dict):
        raise InputError(path, "", "a space file must be a YAML mapping of sections")
    head_keys = set(SpaceHead.model_fields)
    try:
        head = SpaceHead.model_validate({k: v for k, v in raw.items() if k in head_keys})
    except ValidationError as error:
        raise from_validation_error(path, error, fields_at=_keys_at(SpaceHead)) from None
    try:
        objective = get_objective(head.objective)
    except KeyError as error:
        raise InputError(path, "objective", str(error.args[0])) from None
    config_model = objective.config_model
    body = {k: v for k, v in raw.items() if k not in head_keys}
    for key in body:
        if key not in config_model.model_fields:
            hint = closest(key, head_keys | set(config_model.model_fields))
            raise InputError(path, key, f"unknown section{hint}")
    body = _resolve_paths(_resolve_trials(path, body, objective.trial_fields),
                          objective.path_fields, path.parent)
    try:
        body = objective.resolve(body)
    except DataError as error:
        raise from_data(error, path) from None
    try:
        defaults = config_model.model_validate(body)
    except ValidationError as error:
        raise from_validation_error(path, error, fields_at=_keys_at(config_model)) from None
    _check_metric(path, head, objective, defaults)
    space = SearchSpace(path, head, objective, defaults)
    if objective_checks:
        check_space(space)
    return space


def check_space(space: SearchSpace) -> None:
    """The objective's checks: every searched key exists, and every value the sampler may pick
    gives a config the objective accepts; then the data. Raises InputError."""
    _check_search(space)
    try:
        space.objective.check_data(space.defaults)
    except DataError as error:
        raise from_data(error, space.source) from None


def _check_metric(path: Path, head: SpaceHead, objective: Objective,
                  defaults: BaseModel) -> None:
    """Each of study.metric is one the objective reports for this config, once; a direction
    defaults to its metric's, and the opposite one (searching for the worst model) is refused.
    Afterwards study.metric and study.direction are the first objective's, and study.metrics
    and study.directions list them all."""
    study = head.study
    names = [m.name for m in objective.metrics_for(defaults)]
    wanted = study.metric if isinstance(study.metric, list) else [study.metric or names[0]]
    if not wanted:
        raise InputError(path, "study.metric", "an empty list: name one metric or more")
    directions = study.direction if isinstance(study.direction, list) else None
    if directions is not None and len(directions) != len(wanted):
        raise InputError(path, "study.direction", f"{len(directions)} directions for "
                         f"{len(wanted)} metrics: give one per metric, in the same order")
    if directions is None:
        if study.direction is not None and len(wanted) > 1:
            raise InputError(path, "study.direction", f"one direction for {len(wanted)} "
                             "metrics: give a list, one per metric, or leave it out")
        directions = [study.direction] * len(wanted)
    for index, (name, direction) in enumerate(zip(wanted, directions, strict=True)):
        where = f"study.metric[{index}]" if len(wanted) > 1 else "study.metric"
        if name in wanted[:index]:
            raise InputError(path, where, f"{name!r} is named twice")
        metric = objective.metric(name, defaults)
        if metric is None:
            raise InputError(path, where, f"unknown metric {name!r}{closest(name, names)}; "
                             f"{objective.name} reports: {', '.join(names)}")
        if direction is not None and direction != metric.direction:
            at = f"study.direction[{index}]" if len(wanted) > 1 else "study.direction"
            raise InputError(path, at, f"{direction} would search for the worst "
                             f"{metric.name}, which is better when "
                             f"{'lower' if metric.direction == 'minimize' else 'higher'}; use "
                             f"{metric.direction}")
        if index == 0 and metric.final:
            raise InputError(path, where, f"{name} is measured once, at a trial's end: the "
                             "first metric is the one each evaluation reports (the scheduler "
                             "and the best checkpoint follow it); put it after one that is")
        directions[index] = metric.direction
    study._metrics, study._directions = list(wanted), list(directions)
    study.metric, study.direction = wanted[0], directions[0]


def _check_search(space: SearchSpace) -> None:
    """Every searched key exists, conditions refer to earlier parameters, and every value the
    sampler may pick gives a config the objective accepts (checked one parameter at a time)."""
    try:  # the fixed sections first, so a problem there is named by its own field
        space.objective.check(space.defaults)
    except DataError as error:
        raise from_data(error, space.source) from None
    seen: list[str] = []
    fixed_values = space.defaults.model_dump()
    for key, param in space.head.search.items():
        field = f"search.{key}"
        if not _key_exists(type(space.defaults), key.split(".")):
            valid = _all_dotted_keys(type(space.defaults))
            raise InputError(space.source, field, f"no such config key{closest(key, valid)}")
        for other in param.when or {}:
            if other not in seen:
                raise InputError(space.source, f"{field}.when", f"'{other}' is not searched "
                                 "before this parameter")
        seen.append(key)
        # The untuned baseline runs with the fixed value, which a categorical must offer.
        fixed = _get_dotted(fixed_values, key)
        if isinstance(param, CategoricalParam) and fixed not in (None, *param.choices):
            raise InputError(space.source, f"{field}.choices", f"the untuned value {fixed!r} "
                             "(the baseline trial's) is not a choice; add it, or fix the key "
                             "to one of the choices")
        values = param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        for value in values:
            try:
                config = space.trial_config({key: value})
                space.objective.check(config)
            except (InputError, DataError) as error:
                raise InputError(space.source, field, f"value {value!r}: {error.problem}") \
                    from None


def is_active(param: _Param, chosen: dict[str, Any]) -> bool:
    return all(chosen.get(key) in values for key, values in (param.when or {}).items())


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _get_dotted(raw: dict, key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return copy.deepcopy(node)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation if is_model else None


def _key_exists(model: type[BaseModel], parts: list[str]) -> bool:
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    sub = _submodel(field.annotation)
    if sub is not None:
        return _key_exists(sub, parts[1:])
    # A free-form mapping (model.config_overrides) takes any key below it.
    return getattr(field.annotation, "__origin__", None) is dict


def _all_dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        sub = _submodel(field.annotation)
        keys.extend(_all_dotted_keys(sub, f"{prefix}{name}.") if sub else [f"{prefix}{name}"])
    return keys


def _keys_at(model: type[BaseModel]):
    """For error hints: the valid keys of the model nested at a location."""
    params = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}

    def keys(loc: tuple) -> list[str]:
        if len(loc) == 3 and loc[0] == "search" and loc[2] in params:
            return list(params[loc[2]].model_fields)  # search.<key>.<type>.<field>
        current: type[BaseModel] | None = model
        for part in loc:
            field = current.model_fields.get(str(part)) if current else None
            current = _submodel(field.annotation) if field else None
        return list(current.model_fields) if current else []

    return keys


def _fields(body: dict, fields: dict[str, list[str]]):
    """(dotted name, the mapping that holds it, its last key, its value) of each field
    (``section: [key or key.subkey]``) the body writes as a string."""
    for section, keys in fields.items():
        for key in keys:
            *parents, last = key.split(".")
            holder = body.get(section)
            for part in parents:
                holder = holder.get(part) if isinstance(holder, dict) else None
            if isinstance(holder, dict) and isinstance(holder.get(last), str):
                yield f"{section}.{key}", holder, last, holder[last]


def _resolve_trials(source: Path, body: dict, trial_fields: dict[str, list[str]]) -> dict:
    """Each trial field naming an earlier study (``STUDY`` for its best trial, or
    ``STUDY:TRIAL``) instead of an existing path gets that trial's folder."""
    body = copy.deepcopy(body)
    for field, holder, key, value in _fields(body, trial_fields):
        if (source.parent / value).exists() or Path(value).exists():
            continue
        name, _, number = value.partition(":")
        try:
            if number and not number.isdigit():
                raise InputError(value, "", f"trial {number!r} is not a trial number")
            resolved = resolve_study(name)
            trial = resolved.trial(int(number) if number else None)
        except InputError as error:
            raise InputError(source, field, f"{value!r} is neither a folder nor a finished "
                             f"trial of a study ({error}); run that study's search first") \
                from None
        holder[key] = str(resolved.paths.folder_of(trial))
    return body


def _resolve_paths(body: dict, path_fields: dict[str, list[str]], base: Path) -> dict:
    """A relative path found beside the space file means that file, wherever the launcher is
    run from; otherwise it stays as written (relative to the working folder, or a hub id)."""
    body = copy.deepcopy(body)
    for _, holder, key, value in _fields(body, path_fields):
        if (base / value).exists():
            holder[key] = str((base / value).resolve())
    return body
