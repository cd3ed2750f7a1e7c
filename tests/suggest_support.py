"""A small route set with tiers and an outcomes store holding what the learning loop logs:
classifier decisions, feedback corrections, outcome records (shared by the suggest tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from semroute.outcomes import FeedbackEntry, LoggedRequest, OutcomeRecord, OutcomeStore, text_hash

CATALOGUE: dict[str, Any] = {
    "profile": "test",
    "profiles": {"test": {
        "fast": {"provider": "openai", "model": "small", "base_url": "http://127.0.0.1:9/v1",
                 "input_price": 0.2, "output_price": 0.8},
        "powerful": {"provider": "openai", "model": "large",
                     "base_url": "http://127.0.0.1:9/v1", "input_price": 5, "output_price": 25},
    }},
    "router": {"tiers": ["fast", "powerful"], "score_threshold": 0.75},
}

BILLING = """\
# Billing questions: keep this comment (suggest edits the text, not a re-dump)
name: billing
description: Payments, refunds, invoices and subscriptions.
model: fast   # cheap is enough
metadata: {tier: fast}
utterances:
  - I want a refund for my last payment
  - where can I download my invoice
  - 'why was I charged: I cancelled already'
  - update the credit card on my account
  - how much does the premium plan cost per month
"""

ROUTES: dict[str, dict[str, Any]] = {
    "greet": {"name": "greet", "description": "Greetings and small talk.", "model": "fast",
              "metadata": {"tier": "fast"},
              "utterances": ["hi there", "hello, how are you", "good morning friend",
                             "hey what's up", "nice to meet you"]},
    "code": {"name": "code", "description": "Writing and fixing code.", "model": ["powerful"],
             "metadata": {"tier": "powerful"},
             "utterances": ["write a python function to sort a list",
                            "implement binary search in java", "reverse a linked list in C",
                            "write a SQL query joining two tables",
                            "create a REST endpoint in flask"]},
}


def write_route_set(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.yaml").write_text(yaml.safe_dump(CATALOGUE, sort_keys=False))
    (folder / "billing.yaml").write_text(BILLING)
    for name, data in ROUTES.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def log(store: OutcomeStore, rows: list[tuple[str, str, str, str]], ts: float = 1000.0,
        feedback: dict[str, str] | None = None) -> None:
    """(request id, text, route, method) rows, their texts kept; feedback labels by id."""
    with store.transaction() as tx:
        tx.log_requests([LoggedRequest(request_id=rid, ts=ts + i, route=route, method=method,
                                       text_hash=text_hash(text), model="fast")
                         for i, (rid, text, route, method) in enumerate(rows)],
                        texts={text_hash(t): t for _, t, _, _ in rows})
        for rid, label in (feedback or {}).items():
            tx.add_feedback(FeedbackEntry(request_id=rid, label=label, ts=ts + 500))


def outcomes(store: OutcomeStore, route: str, model: str, good: int, bad: int,
             source: str = "gate") -> None:
    """`good` outcomes of 1.0 and `bad` of 0.0 for `model` on `route`."""
    store.add_many([OutcomeRecord(text_hash=text_hash(f"{route}-{model}-{i}"), model=model,
                                  score=1.0 if i < good else 0.0, source=source, route=route)
                    for i in range(good + bad)])
