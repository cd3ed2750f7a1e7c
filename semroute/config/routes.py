"""Route files and the model catalogue: pydantic schemas and a loader whose errors name
the file, the route and the field, so a user knows exactly what to fix."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from semroute.config.modelspec import STRUCTURED_MODES, STRUCTURED_WHY, ModelSpec, StructuredMode
from semroute.config.rules import RuleSpec
from semroute.errors import ConfigError

CATALOGUE_FILE = "models.yaml"
# Names that mean "no route" elsewhere (casefolded, as labels are matched): a route by one of
# these names could never be told apart from that answer.
RESERVED_ROUTE_NAMES: dict[str, str] = {
    "none": "the fallback classifier answers 'none' when no route fits",
    "oos": "eval and fit data label out-of-scope queries 'oos'",
}
_WS = re.compile(r"\s+")
# libyaml's safe loader parses route files ~12x faster than the pure-Python one (same errors).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def normalise_text(text: str) -> str:
    """Collapse whitespace and trim: the form utterances and queries are compared in."""
    return _WS.sub(" ", text).strip()


def utterance_key(text: str) -> str:
    """Case- and whitespace-insensitive key used to detect the same utterance twice."""
    return normalise_text(text).casefold()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


BUILTIN_PICKS = ("judge", "longest", "first")


class ParallelSpec(_Strict):
    """A route's `parallel:`: ask several models at once, then pick one answer. `pick` is
    `judge` (a model chooses; needs `judge_model`), `longest`, `first` (the first answer in
    `models` order), or the name of a picker registered in code (`Dispatcher(pickers=...)`)."""

    models: list[str] = Field(min_length=2)
    pick: str = Field(default="judge", pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=64)
    judge_model: str | None = None
    min_answers: int = Field(default=1, ge=1)

    @field_validator("models")
    @classmethod
    def _models_distinct(cls, v: list[str]) -> list[str]:
        dupes = sorted({k for k in v if v.count(k) > 1})
        if dupes:
            raise ValueError(f"each model may be asked once; repeated: {', '.join(dupes)}")
        return v

    @field_validator("judge_model")
    @classmethod
    def _judge_only_for_judge(cls, v: str | None, info: ValidationInfo) -> str | None:
        pick = info.data.get("pick")
        if v is not None and pick is not None and pick != "judge":
            raise ValueError(f"only used with pick: judge (pick is '{pick}')")
        return v

    @field_validator("min_answers")
    @classmethod
    def _min_answers_reachable(cls, v: int, info: ValidationInfo) -> int:
        models = info.data.get("models")
        if isinstance(models, list) and v > len(models):
            raise ValueError(f"{v} answers cannot come from {len(models)} models")
        return v


class RouteFile(_Strict):
    """One `routes/<name>.yaml`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = Field(min_length=1)
    model: str | list[str]
    utterances: list[str] = Field(min_length=1)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    system_prompt: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
    parallel: ParallelSpec | None = None

    @field_validator("parallel")
    @classmethod
    def _judge_named(cls, v: ParallelSpec | None) -> ParallelSpec | None:
        if v is not None and v.pick == "judge" and v.judge_model is None:
            raise ValueError("pick: judge needs judge_model (a catalogue key), or choose "
                             "another pick: longest, first, or a picker registered in code")
        return v

    @field_validator("name")
    @classmethod
    def _name_not_reserved(cls, v: str) -> str:
        why = RESERVED_ROUTE_NAMES.get(v.casefold())
        if why is not None:
            raise ValueError(f"'{v}' is reserved in any letter case ({why}); rename the route")
        return v

    @field_validator("model")
    @classmethod
    def _model_chain_not_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("must name at least one model key")
        return v

    @field_validator("rules")
    @classmethod
    def _rule_names_unique(cls, v: list[RuleSpec]) -> list[RuleSpec]:
        seen: set[str] = set()
        for r in v:
            if r.name in seen:
                raise ValueError(f"rule name '{r.name}' appears twice in this route")
            seen.add(r.name)
        return v

    @field_validator("utterances")
    @classmethod
    def _utterances_not_blank(cls, v: list[str]) -> list[str]:
        for i, text in enumerate(v):
            if not normalise_text(text):
                raise ValueError(f"utterance #{i + 1} is empty")
        return v


class ModelEntry(_Strict):
    """One model of the catalogue: which SDK, which model id, where, what it costs."""

    provider: Literal["anthropic", "openai"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None
    input_price: float = Field(default=0.0, ge=0, description="USD per million input tokens")
    output_price: float = Field(default=0.0, ge=0, description="USD per million output tokens")
    timeout: float = Field(default=30.0, gt=0)
    structured: Literal["auto", "json_schema", "grammar", "tool"] = Field(
        default="auto", description="how the classifier's output is constrained: auto = "
        "json_schema (openai) / tool (anthropic); grammar = llama.cpp GBNF, much faster locally")

    @field_validator("structured")
    @classmethod
    def _structured_suits_provider(cls, v: StructuredMode, info: ValidationInfo) -> StructuredMode:
        provider: Any = info.data.get("provider")  # absent when it failed its own check
        allowed = STRUCTURED_MODES.get(provider, ())
        if allowed and v not in allowed:
            raise ValueError(f"'{v}' is {STRUCTURED_WHY[v]}, not provider '{provider}'; use "
                             f"one of {', '.join(allowed)}")
        return v

    def spec(self, key: str) -> ModelSpec:
        """The provider-level description of this model."""
        return ModelSpec(key=key, provider=self.provider, model=self.model,
                         base_url=self.base_url, api_key_env=self.api_key_env,
                         timeout=self.timeout, price_in=self.input_price,
                         price_out=self.output_price, structured=self.structured)


StickinessMode = Literal["off", "never_downgrade", "same_model"]


class StickinessSettings(_Strict):
    """`router.stickiness`: how a conversation (or a user) keeps its tier or model."""

    mode: StickinessMode = "off"
    ttl_seconds: float = Field(default=3600.0, gt=0)
    user_ttl_seconds: float | None = Field(
        default=None, gt=0, description="keep a `user`'s model this long unless the tier must "
        "rise (None: no per-user stability)")
    max_entries: int = Field(default=100_000, ge=1, description="in-process store bound (LRU)")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class RouterSettings(_Strict):
    """Router-wide settings; those that shape the index are recorded in its manifest."""

    encoder: str = "all-MiniLM-L6-v2"
    backend: Literal["torch", "onnx", "onnx-int8"] = "onnx-int8"
    index_type: Literal["auto", "flat", "hnsw"] = "auto"
    top_k: int = Field(default=32, ge=1, le=1000)
    blend_alpha: float = Field(default=0.4, ge=0.0, le=1.0)
    score_threshold: Annotated[float, Field(ge=-1.0, le=1.0)] | Literal["auto"] = "auto"
    margin_threshold: float = Field(default=0.05, ge=0.0, le=2.0)
    max_query_chars: int = Field(default=2000, ge=16)
    classifier_model: str | None = None
    classifier_timeout: float = Field(default=10.0, gt=0)
    classifier_candidates: int = Field(default=5, ge=2, le=50)
    default_route: str | None = None
    attempts_per_model: int = Field(default=2, ge=1, le=10)
    backoff_seconds: float = Field(default=0.2, ge=0)
    cooldown_seconds: float = Field(default=30.0, ge=0)
    trace_path: str | None = None
    trace_include_query: bool = False
    tiers: list[str] | None = Field(default=None, min_length=1, description="tier names, "
                                    "weakest first; each route's tier is its metadata.tier")
    stickiness: StickinessSettings = Field(default_factory=StickinessSettings)

    @field_validator("tiers")
    @classmethod
    def _tiers_unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"tier names must be unique: {v}")
        return v

    def index_fields(self) -> dict[str, Any]:
        """The settings an index depends on (a change means `semroute build`)."""
        return {"encoder": self.encoder, "backend": self.backend, "index_type": self.index_type,
                "blend_alpha": self.blend_alpha}


class CatalogueFile(_Strict):
    """`routes/models.yaml`: model profiles and router settings."""

    profile: str = "default"
    profiles: dict[str, dict[str, ModelEntry]] = Field(min_length=1)
    router: RouterSettings = Field(default_factory=RouterSettings)


@dataclass(frozen=True)
class Route:
    """A validated route, with where it came from."""

    name: str
    description: str
    models: tuple[str, ...]
    utterances: tuple[str, ...]
    threshold: float | None
    system_prompt: str | None
    metadata: dict[str, Any]
    file: Path
    rules: tuple[RuleSpec, ...] = ()
    parallel: ParallelSpec | None = None

    def content_hash(self) -> str:
        """Hash of what the index depends on: the name and the (normalised) utterances (not
        the rules: they are checked before the index, so editing them needs no rebuild)."""
        payload = json.dumps([self.name, list(self.utterances)])
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class RouteSet:
    """Everything read from a routes folder: routes, the active profile's models, settings."""

    directory: Path
    routes: tuple[Route, ...]
    models: dict[str, ModelEntry]
    settings: RouterSettings
    profile: str
    profiles: dict[str, dict[str, ModelEntry]] = field(repr=False)

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.routes]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _rule_name(data: Any, i: int) -> str:
    """The name of rule #i of a route file's raw data, else its number."""
    rules = data.get("rules") if isinstance(data, dict) else None
    rule = rules[i] if isinstance(rules, list) and i < len(rules) else None
    name = rule.get("name") if isinstance(rule, dict) else None
    return f"'{name}'" if isinstance(name, str) else f"#{i + 1}"


def _pydantic_problems(path: Path, err: ValidationError, route: str | None,
                       data: Any = None) -> list[str]:
    problems = []
    for e in err.errors():
        loc = e["loc"]
        where = f"{path}" + (f": route '{route}'" if route else "")
        if len(loc) >= 3 and loc[0] == "profiles":  # a catalogue entry: name its profile and key
            where += f": profile '{loc[1]}': model '{loc[2]}'"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):  # name the rule
            where += f": rule {_rule_name(data, loc[1])}"
        field_name = _loc(loc) or "(file)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README 'Route files')"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "value_error":  # our own validators: their message, without a prefix
            msg = str(e.get("ctx", {}).get("error", msg))
        problems.append(f"{where}: field '{field_name}': {msg}")
    return problems


def _read_yaml(path: Path) -> tuple[Any, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{path}: cannot read file: {exc}"]
    try:
        return yaml.load(text, Loader=_LOADER), []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return None, [f"{path}: invalid YAML: {line}{exc.problem or exc}"]
    except yaml.YAMLError as exc:
        return None, [f"{path}: invalid YAML: {exc}"]


def _load_catalogue(path: Path, problems: list[str]) -> CatalogueFile | None:
    if not path.exists():
        problems.append(f"{path}: the model catalogue is missing (see README 'Model catalogue')")
        return None
    data, errs = _read_yaml(path)
    problems.extend(errs)
    if errs:
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping with 'profiles' and 'router'")
        return None
    try:
        return CatalogueFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(path, exc, None))
        return None


def _load_route_file(path: Path, problems: list[str], invalid: set[str]) -> Route | None:
    data, errs = _read_yaml(path)
    problems.extend(errs)
    if errs:
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping with name, description, model, utterances")
        return None
    name = data.get("name") if isinstance(data.get("name"), str) else None
    try:
        spec = RouteFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(path, exc, name, data))
        invalid.add(name or path.stem)
        return None
    models = (spec.model,) if isinstance(spec.model, str) else tuple(spec.model)
    return Route(
        name=spec.name,
        description=normalise_text(spec.description),
        models=models,
        utterances=tuple(normalise_text(u) for u in spec.utterances),
        threshold=spec.threshold,
        system_prompt=spec.system_prompt,
        metadata=dict(spec.metadata),
        file=path,
        rules=tuple(spec.rules),
        parallel=spec.parallel,
    )


def _cross_checks(routes: list[Route], cat: CatalogueFile, cat_path: Path,
                  invalid: set[str]) -> list[str]:
    """Checks across files. Routes whose own file failed (`invalid`) are not reported again."""
    problems: list[str] = []
    seen_names: dict[str, Route] = {}
    seen_utts: dict[str, tuple[Route, str]] = {}
    for r in routes:
        if r.name in seen_names:
            other = seen_names[r.name].file
            problems.append(f"{r.file}: route '{r.name}': field 'name': duplicate route name "
                            f"(also defined in {other})")
            continue
        seen_names[r.name] = r
        for text in r.utterances:
            key = text.casefold()  # utterances are normalised on load
            if key in seen_utts:
                other_route, _ = seen_utts[key]
                where = ("appears twice in this route" if other_route is r
                         else f"is also in route '{other_route.name}' ({other_route.file})")
                problems.append(f"{r.file}: route '{r.name}': field 'utterances': "
                                f"'{text}' {where}")
            else:
                seen_utts[key] = (r, text)
        keyed = [("model", key) for key in r.models]
        if r.parallel is not None:
            keyed += [("parallel.models", key) for key in r.parallel.models]
            if r.parallel.judge_model is not None:
                keyed.append(("parallel.judge_model", r.parallel.judge_model))
        for profile_name, models in cat.profiles.items():
            for field_name, key in keyed:
                if key not in models:
                    problems.append(
                        f"{r.file}: route '{r.name}': field '{field_name}': '{key}' is not in "
                        f"profile '{profile_name}' of {cat_path} "
                        f"(known: {', '.join(sorted(models))})")
    s = cat.router
    if s.default_route is not None and s.default_route not in {*seen_names, *invalid}:
        problems.append(f"{cat_path}: field 'router.default_route': no route named "
                        f"'{s.default_route}'")
    for profile_name, models in cat.profiles.items():
        if s.classifier_model is not None and s.classifier_model not in models:
            problems.append(f"{cat_path}: field 'router.classifier_model': '{s.classifier_model}'"
                            f" is not in profile '{profile_name}'")
    problems.extend(_tier_checks(routes, s, cat_path))
    if cat.profile not in cat.profiles:
        problems.append(f"{cat_path}: field 'profile': '{cat.profile}' is not one of "
                        f"{', '.join(sorted(cat.profiles))}")
    return problems


def _tier_checks(routes: list[Route], s: RouterSettings, cat_path: Path) -> list[str]:
    """Stickiness needs tiers: `router.tiers` when a policy compares them, and every route's
    `metadata.tier` one of them whenever tiers are listed."""
    problems: list[str] = []
    st = s.stickiness
    if s.tiers is None:
        needs = "mode 'never_downgrade'" if st.mode == "never_downgrade" else \
            "user_ttl_seconds" if st.user_ttl_seconds is not None else None
        if needs:
            problems.append(f"{cat_path}: field 'router.tiers': required by router.stickiness."
                            f"{needs} (list tier names weakest first, e.g. [fast, balanced, "
                            f"powerful], and give each route metadata: {{tier: ...}})")
        return problems
    for r in routes:
        tier = r.metadata.get("tier")
        if tier not in s.tiers:
            got = "is missing" if tier is None else f"'{tier}' is not one of router.tiers"
            problems.append(f"{r.file}: route '{r.name}': field 'metadata.tier': {got} "
                            f"({', '.join(s.tiers)}; see {cat_path})")
    return problems


def route_files(directory: Path) -> list[Path]:
    """The route files of a folder, in a stable order (the catalogue excluded)."""
    files = [*directory.glob("*.yaml"), *directory.glob("*.yml")]
    return sorted(p for p in files if p.name != CATALOGUE_FILE)


def load_routes(directory: str | Path = "routes", *, profile: str | None = None) -> RouteSet:
    """Read and validate a routes folder; raise `ConfigError` listing every problem found."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError([f"{directory}: routes folder not found (pass --routes DIR)"])
    problems: list[str] = []
    cat_path = directory / CATALOGUE_FILE
    catalogue = _load_catalogue(cat_path, problems)
    files = route_files(directory)
    if not files:
        problems.append(f"{directory}: no route files (*.yaml besides {CATALOGUE_FILE})")
    invalid: set[str] = set()
    routes = [r for p in files if (r := _load_route_file(p, problems, invalid)) is not None]
    if catalogue is not None:
        problems.extend(_cross_checks(routes, catalogue, cat_path, invalid))
    if problems or catalogue is None:
        raise ConfigError(problems)
    active = profile or catalogue.profile
    if active not in catalogue.profiles:
        raise ConfigError([f"profile '{active}' is not in {cat_path} "
                           f"(known: {', '.join(sorted(catalogue.profiles))})"])
    return RouteSet(
        directory=directory,
        routes=tuple(routes),
        models=dict(catalogue.profiles[active]),
        settings=catalogue.router,
        profile=active,
        profiles={k: dict(v) for k, v in catalogue.profiles.items()},
    )
