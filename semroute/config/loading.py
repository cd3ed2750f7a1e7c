"""Reading a routes folder: YAML parsing, schema validation and the checks across files, with
every problem reported at once, naming the file, the route and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from semroute.config.gateway import GatewaySettings
from semroute.config.oos import oos_path, read_oos_examples
from semroute.config.routes import MODEL_PREFIX, STEP_PREFIX, Route, RouteSet
from semroute.config.schema import (
    CATALOGUE_FILE,
    CatalogueFile,
    RouteFile,
    RouterSettings,
)
from semroute.config.text import normalise_text
from semroute.errors import ConfigError

# libyaml's safe loader parses route files ~12x faster than the pure-Python one (same errors).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def _read_mapping(path: Path, problems: list[str], keys: str) -> dict[str, Any] | None:
    """A YAML file's top-level mapping; None (with the problem recorded) if unreadable."""
    data, errs = _read_yaml(path)
    problems.extend(errs)
    if errs:
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping with {keys}")
        return None
    return data


def _load_catalogue(path: Path, problems: list[str]) -> CatalogueFile | None:
    if not path.exists():
        problems.append(f"{path}: the model catalogue is missing (see README 'Model catalogue')")
        return None
    data = _read_mapping(path, problems, "'profiles' and 'router'")
    if data is None:
        return None
    try:
        return CatalogueFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(path, exc, None))
        return None


def _load_route_file(path: Path, problems: list[str], invalid: set[str]) -> Route | None:
    data = _read_mapping(path, problems, "name, description, model, utterances")
    if data is None:
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
        negatives=tuple(normalise_text(u) for u in spec.negatives),
        threshold=spec.threshold,
        system_prompt=spec.system_prompt,
        metadata=dict(spec.metadata),
        file=path,
        rules=tuple(spec.rules),
        parallel=spec.parallel,
        cascade=spec.cascade,
        ladder=spec.ladder,
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
        problems.extend(negative_problems(r))
        keyed = [("model", key) for key in r.models]
        if r.parallel is not None:
            keyed += [("parallel.models", key) for key in r.parallel.models]
            if r.parallel.judge_model is not None:
                keyed.append(("parallel.judge_model", r.parallel.judge_model))
        if r.cascade is not None:
            keyed += r.cascade.model_keys()
        if r.ladder is not None:
            keyed += r.ladder.model_keys()
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
    problems.extend(_step_and_budget_checks(cat, cat_path, {*seen_names, *invalid}))
    if cat.profile not in cat.profiles:
        problems.append(f"{cat_path}: field 'profile': '{cat.profile}' is not one of "
                        f"{', '.join(sorted(cat.profiles))}")
    return problems


def negative_problems(route: Route) -> list[str]:
    """A route's negatives: each once, and none also one of its utterances."""
    problems: list[str] = []
    own = {u.casefold() for u in route.utterances}
    seen: set[str] = set()
    for i, text in enumerate(route.negatives, 1):
        key = text.casefold()
        why = ("appears twice in this route" if key in seen else
               "is also an utterance of this route: remove it from one of the two lists"
               if key in own else None)
        seen.add(key)
        if why:
            problems.append(f"{route.file}: route '{route.name}': field 'negatives[{i}]': "
                            f"'{text}' {why}")
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


def _step_and_budget_checks(cat: CatalogueFile, cat_path: Path, names: set[str]) -> list[str]:
    """Every step's models, every cap's `downgrade_to` and the shadow's reference and judge
    are in every profile; a route cap's `match` names a route or a step (`step:<name>`), as
    does each key of `router.shadow.routes` (or `model:<key>`)."""
    problems: list[str] = []
    keyed = [(f"steps.{step}", key) for step, models in cat.steps.items()
             for key in ([models] if isinstance(models, str) else models)]
    caps = cat.router.budgets.caps
    if cat.router.ladder is not None:
        keyed += cat.router.ladder.model_keys("router.ladder")
    keyed += cat.router.shadow.model_keys()
    keyed += [(f"router.budgets.caps[{i + 1}].downgrade_to", c.downgrade_to)
              for i, c in enumerate(caps) if c.downgrade_to is not None]
    for profile_name, models in cat.profiles.items():
        problems.extend(f"{cat_path}: field '{field_name}': '{key}' is not in profile "
                        f"'{profile_name}' (known: {', '.join(sorted(models))})"
                        for field_name, key in keyed if key not in models)
    targets = names | {f"{STEP_PREFIX}{step}" for step in cat.steps}
    shadowed = targets | {f"{MODEL_PREFIX}{key}" for m in cat.profiles.values() for key in m}
    problems.extend(f"{cat_path}: field 'router.shadow.routes.{name}': no route, step "
                    f"(step:<name>) or model (model:<key>) named '{name}' (routes: "
                    f"{', '.join(sorted(names))})"
                    for name in cat.router.shadow.routes if name not in shadowed)
    for i, c in enumerate(caps):
        if c.scope == "route" and c.match is not None and c.match not in targets:
            problems.append(f"{cat_path}: field 'router.budgets.caps[{i + 1}].match': cap "
                            f"'{c.name}' names no route or step '{c.match}' (known: "
                            f"{', '.join(sorted(targets))})")
    return problems


def route_files(directory: Path, *, exclude: Path | None = None) -> list[Path]:
    """The route files of a folder, in a stable order (the catalogue and `exclude`, the
    out-of-scope example file, left out)."""
    files = [*directory.glob("*.yaml"), *directory.glob("*.yml")]
    skip = exclude.resolve() if exclude is not None else None
    return sorted(p for p in files if p.name != CATALOGUE_FILE and p.resolve() != skip)


def load_routes(directory: str | Path = "routes", *, profile: str | None = None) -> RouteSet:
    """Read and validate a routes folder; raise `ConfigError` listing every problem found."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError([f"{directory}: routes folder not found (pass --routes DIR)"])
    problems: list[str] = []
    cat_path = directory / CATALOGUE_FILE
    catalogue = _load_catalogue(cat_path, problems)
    oos_file = oos_path(directory, catalogue.router.oos_examples if catalogue else None)
    files = route_files(directory, exclude=oos_file)
    if not files:
        problems.append(f"{directory}: no route files (*.yaml besides {CATALOGUE_FILE})")
    invalid: set[str] = set()
    routes = [r for p in files if (r := _load_route_file(p, problems, invalid)) is not None]
    if catalogue is not None:
        problems.extend(_cross_checks(routes, catalogue, cat_path, invalid))
    oos: tuple[str, ...] = ()
    if oos_file is not None:
        owners = {u.casefold(): r.name for r in routes for u in r.utterances}
        oos, oos_problems = read_oos_examples(oos_file, owners)
        problems.extend(oos_problems)
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
        steps={k: (v,) if isinstance(v, str) else tuple(v) for k, v in catalogue.steps.items()},
        oos_examples=oos,
        oos_file=oos_file,
    )


def load_gateway_config(path: str | Path | None) -> GatewaySettings:
    """Read `gateway.yaml` (None: the defaults); raise `ConfigError` naming file and field."""
    if path is None:
        return GatewaySettings()
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: gateway settings file not found (pass --config FILE)"])
    problems: list[str] = []
    data = _read_mapping(path, problems, "'keys', 'limits', ...")
    if data is None:
        raise ConfigError(problems)
    try:
        return GatewaySettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(path, exc, None)) from None
