"""The `rules:` of a route file: conditions checked before the index, validated on load.

A rule fires when every condition it gives holds. Keywords match whole words, case-insensitively
(`any`: at least one, `all`: every one); `regex` is searched case-insensitively; lengths count the
whitespace-normalised query; `metadata` must match the caller's request metadata exactly.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Whole-word edges that also work for keywords that start or end in punctuation ("c++", ".net").
_EDGE_L, _EDGE_R = r"(?<!\w)", r"(?!\w)"
REGEX_FLAGS = re.IGNORECASE
TOKEN = re.compile(r"\w+")


def tokens(text: str) -> frozenset[str]:
    """The casefolded word-character runs of a text: a keyword can only match a query whose
    tokens include all of the keyword's (a pre-check that spares most regex searches)."""
    return frozenset(TOKEN.findall(text.casefold()))


def keyword_pattern(keyword: str) -> str:
    """A keyword as a whole-word pattern; inner whitespace matches any run of whitespace."""
    words = keyword.split()
    return _EDGE_L + r"\s+".join(re.escape(w) for w in words) + _EDGE_R


def any_pattern(keywords: list[str] | tuple[str, ...]) -> str:
    """One alternation that finds any of the keywords (longest first, so the longest wins)."""
    ordered = sorted(keywords, key=len, reverse=True)
    return "(?:" + "|".join(keyword_pattern(k) for k in ordered) + ")"


def all_pattern(keywords: list[str] | tuple[str, ...]) -> str:
    """One pattern of lookaheads that matches only when every keyword occurs."""
    return "^" + "".join(f"(?=[\\s\\S]*?{keyword_pattern(k)})" for k in keywords)


class RuleSpec(BaseModel):
    """One rule of a route file (`rules: [...]`); it fires when all its given conditions hold."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    any_: tuple[str, ...] | None = Field(default=None, alias="any")
    all_: tuple[str, ...] | None = Field(default=None, alias="all")
    regex: str | None = None
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=0)
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=0)
    metadata: dict[str, str] | None = None
    priority: int = 0

    @field_validator("any_", "all_")
    @classmethod
    def _keywords(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("must list at least one keyword (or leave the key out)")
        for i, k in enumerate(v):
            if not k.split():
                raise ValueError(f"keyword #{i + 1} is empty")
            if not TOKEN.search(k):
                raise ValueError(f"keyword #{i + 1} ({k!r}) has no letter or digit; use `regex` "
                                 f"for punctuation")
        return tuple(" ".join(k.split()) for k in v)

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not v:
            raise ValueError("is empty")
        try:
            re.compile(v, REGEX_FLAGS)
        except re.error as exc:
            pos = "" if exc.pos is None else f" at position {exc.pos}"
            raise ValueError(f"invalid regular expression: {exc.msg}{pos}") from None
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata_not_empty(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and not v:
            raise ValueError("must name at least one key (or leave the key out)")
        return v

    @model_validator(mode="after")
    def _has_condition_and_sane_bounds(self) -> RuleSpec:
        if not self.conditions():
            raise ValueError("the rule has no condition: give any, all, regex, min_chars, "
                             "max_chars, min_words, max_words or metadata")
        for lo, hi in (("min_chars", "max_chars"), ("min_words", "max_words")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is greater than {hi} ({b}): it can never fire")
        return self

    def conditions(self) -> list[str]:
        """The names of the conditions this rule gives, in file terms."""
        given = {"any": self.any_, "all": self.all_, "regex": self.regex,
                 "min_chars": self.min_chars, "max_chars": self.max_chars,
                 "min_words": self.min_words, "max_words": self.max_words,
                 "metadata": self.metadata}
        return [k for k, v in given.items() if v is not None]

    @property
    def has_text_condition(self) -> bool:
        """Whether it looks at the query's words (keywords or a regex), not only its size."""
        return self.any_ is not None or self.all_ is not None or self.regex is not None
