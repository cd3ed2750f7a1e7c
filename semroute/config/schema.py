"""Pydantic schemas of what route files and the model catalogue may contain; each validator's
message says what to fix. Loading, and the checks across files, are in loading.py."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from semroute.config.cascade import CascadeSpec
from semroute.config.ladder import LadderSpec
from semroute.config.modelspec import STRUCTURED_MODES, STRUCTURED_WHY, ModelSpec, StructuredMode
from semroute.config.rules import RuleSpec
from semroute.config.shadowing import ShadowSettings
from semroute.config.text import normalise_text

CATALOGUE_FILE = "models.yaml"
STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Names that mean "no route" elsewhere (casefolded, as labels are matched): a route by one of
# these names could never be told apart from that answer.
RESERVED_ROUTE_NAMES: dict[str, str] = {
    "none": "the fallback classifier answers 'none' when no route fits",
    "oos": "eval and fit data label out-of-scope queries 'oos'",
}


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
    negatives: list[str] = Field(default_factory=list, description="queries that must not "
                                 "match this route (near misses); see README 'Negatives'")
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    system_prompt: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
    parallel: ParallelSpec | None = None
    cascade: CascadeSpec | None = None
    ladder: LadderSpec | None = None

    @field_validator("ladder")
    @classmethod
    def _ladder_alone(cls, v: LadderSpec | None, info: ValidationInfo) -> LadderSpec | None:
        other = "parallel" if info.data.get("parallel") is not None else \
            "cascade" if info.data.get("cascade") is not None else None
        if v is not None and other is not None:
            raise ValueError(f"a ladder picks one model per query; `{other}` asks several: "
                             f"remove `ladder` or `{other}` (a cascade's gate verdicts can "
                             f"feed the outcomes store a ladder learns from)")
        return v

    @field_validator("cascade")
    @classmethod
    def _not_parallel_too(cls, v: CascadeSpec | None, info: ValidationInfo) -> CascadeSpec | None:
        if v is not None and info.data.get("parallel") is not None:
            raise ValueError("a route either asks models in parallel or cascades through "
                             "them, not both: remove `parallel` or `cascade`")
        return v

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

    @field_validator("utterances", "negatives")
    @classmethod
    def _utterances_not_blank(cls, v: list[str], info: ValidationInfo) -> list[str]:
        kind = "negative" if info.field_name == "negatives" else "utterance"
        for i, text in enumerate(v):
            if not normalise_text(text):
                raise ValueError(f"{kind} #{i + 1} is empty")
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


BudgetScope = Literal["client_key", "user", "route"]
BudgetPeriod = Literal["hour", "day", "month"]
DEFAULT_BUDGET_STORE = ".semroute/state.db"


class BudgetCap(_Strict):
    """One spending cap per period: per caller key, user or route (each one, or the one named
    by `match`), counted in calendar periods (UTC); over it, `downgrade` or `refuse`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    scope: BudgetScope
    match: str | None = Field(default=None, min_length=1, description="the one client key, "
                              "user or route (a step: 'step:<name>') capped; None: each one")
    period: BudgetPeriod
    limit_usd: float = Field(gt=0)
    policy: Literal["downgrade", "refuse"] = "refuse"
    downgrade_to: str | None = Field(default=None, description="catalogue key served when "
                                     "over the cap (default: the chain's cheapest model)")

    @field_validator("scope", mode="before")
    @classmethod
    def _api_key_alias(cls, v: Any) -> Any:
        return "client_key" if v == "api_key" else v  # the word for the caller's key

    @field_validator("downgrade_to")
    @classmethod
    def _downgrade_only(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("policy") == "refuse":
            raise ValueError("only used with policy: downgrade")
        return v


class BudgetSettings(_Strict):
    """`router.budgets`: where spend counters live and the caps they enforce."""

    store: str = Field(default=DEFAULT_BUDGET_STORE, min_length=1, description="SQLite file "
                       "of the counters (relative: to the working directory)")
    caps: list[BudgetCap] = Field(default_factory=list)

    @field_validator("caps")
    @classmethod
    def _names_unique(cls, v: list[BudgetCap]) -> list[BudgetCap]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"cap names must be unique; repeated: {', '.join(dupes)}")
        return v


class OutcomesSettings(_Strict):
    """`router.outcomes`: where the outcomes store lives (a relative path is taken relative
    to the routes folder, so the store goes with its route set)."""

    path: str = Field(default="outcomes.db", min_length=1)
    record: bool = Field(default=False, description="write cascade gate verdicts to the store "
                         "(in the background) as outcomes of the models that answered")
    log_requests: bool = Field(default=False, description="journal every answered request "
                               "(in the background): what feedback and reports refer to")
    keep_text: bool = Field(default=False, description="store the query text with each "
                            "journalled request (for `semroute suggest`); off: hashes only")


SharedBackend = Literal["memory", "redis"]
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class SharedStateSettings(_Strict):
    """`router.shared_state`: where cooldowns, stickiness, budget counters and the gateway's
    rate limits live: `memory` (in-process, per replica; budgets in `router.budgets.store`)
    or `redis` (one Redis shared by every replica), and what budgets do when it is down."""

    backend: SharedBackend = "memory"
    url: str = Field(default="redis://127.0.0.1:6379/0", description="the Redis server "
                     "(redis://, rediss:// or unix://); the CLI's --redis overrides it")
    budgets_on_outage: Literal["closed", "open"] = Field(
        default="closed", description="Redis unreachable: refuse capped requests (closed) or "
        "serve them counting in-process (open)")
    timeout_seconds: float = Field(default=0.5, gt=0, le=30, description="connect and "
                                   "reply timeout of one Redis call")
    retry_seconds: float = Field(default=0.5, gt=0, le=60, description="first wait before "
                                 "trying Redis again after an error (doubles, at most 10x)")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(REDIS_SCHEMES):
            raise ValueError(f"'{v}' is not a Redis URL: start it with "
                             f"{', '.join(REDIS_SCHEMES)} (e.g. redis://127.0.0.1:6379/0)")
        return v


class RouterSettings(_Strict):
    """Router-wide settings; those that shape the index are recorded in its manifest."""

    encoder: str = "all-MiniLM-L6-v2"
    backend: Literal["torch", "onnx", "onnx-int8", "native"] = "onnx-int8"
    index_type: Literal["auto", "flat", "hnsw"] = "auto"
    top_k: int = Field(default=32, ge=1, le=1000)
    blend_alpha: float = Field(default=0.4, ge=0.0, le=1.0)
    lexical_weight: float = Field(default=0.0, ge=0.0, le=1.0)  # index/lexical.py; 0 = off
    score_threshold: Annotated[float, Field(ge=-1.0, le=1.0)] | Literal["auto"] = "auto"
    # auto: the encoder's default margin (encoders/packaged.py; 0.05 for an unknown encoder)
    margin_threshold: Annotated[float, Field(ge=0.0, le=2.0)] | Literal["auto"] = "auto"
    max_query_chars: int = Field(default=2000, ge=16)
    classifier_model: str | None = None
    classifier_timeout: float = Field(default=10.0, gt=0)
    classifier_candidates: int = Field(default=5, ge=2, le=50)
    classifier_min_score: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="the classifier floor: an undecided query "
        "whose best route score is below it goes to default_route without a model call")
    default_route: str | None = None
    attempts_per_model: int = Field(default=2, ge=1, le=10)
    backoff_seconds: float = Field(default=0.2, ge=0)
    cooldown_seconds: float = Field(default=30.0, ge=0)
    trace_path: str | None = None
    prescore_replies: bool = Field(
        default=True, description="score each chat reply in the background when it is "
        "produced, so the conversation's next decision encodes only the new turn")
    trace_include_query: bool = False
    tiers: list[str] | None = Field(default=None, min_length=1, description="tier names, "
                                    "weakest first; each route's tier is its metadata.tier")
    stickiness: StickinessSettings = Field(default_factory=StickinessSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    outcomes: OutcomesSettings = Field(default_factory=OutcomesSettings)
    ladder: LadderSpec | None = Field(default=None, description="the ladder of every route "
                                      "without its own (parallel and cascade routes excepted)")
    shared_state: SharedStateSettings = Field(default_factory=SharedStateSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    oos_examples: str | None = Field(
        default=None, min_length=1, description="file of out-of-scope example queries (one "
        "per line, or a YAML list), relative to the routes folder; embedded by `build`")
    contrast_margin: float = Field(
        default=0.05, ge=-1.0, le=1.0, description="a negative or out-of-scope example counts "
        "when it is within this of the best route's nearest utterance (README 'Negatives')")
    contrast_weight: float = Field(
        default=2.0, ge=0.0, le=10.0, description="how much of that excess a route's score "
        "loses (0: negatives and out-of-scope examples are embedded but ignored)")

    @field_validator("budgets", mode="before")
    @classmethod
    def _caps_list(cls, v: Any) -> Any:
        return {"caps": v} if isinstance(v, list) else v  # a bare list of caps is fine

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
    steps: dict[str, str | list[str]] = Field(
        default_factory=dict, description="agent step -> a catalogue key or a failover list")

    @field_validator("steps")
    @classmethod
    def _steps_well_formed(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        problems = [f"step name '{name}': use letters, digits, '_', '.', '-'"
                    for name in v if not STEP_NAME.fullmatch(name)]
        problems += [f"step '{name}' must name at least one model key"
                     for name, models in v.items() if isinstance(models, list) and not models]
        if problems:
            raise ValueError("; ".join(problems))
        return v
