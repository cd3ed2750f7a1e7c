"""Programmatic quality gates on a cheap model's answer, and the weak-then-escalate cascade they
drive (used by benchmarks/cost_quality.py on GSM8K, where the models' answers exist).

Every gate reads only the weak model's answer text: no second sample, no judge."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
FINAL = re.compile(r"(?:answer is|answer:|####|\\boxed\{|total of|=)\s*\$?\s*(-?[\d,]+(?:\.\d+)?)",
                   re.IGNORECASE)
EQUATION = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)\s*([-+*/x×])\s*(-?\d[\d,]*(?:\.\d+)?)\s*=\s*"
                      r"\$?(-?\d[\d,]*(?:\.\d+)?)")
HEDGE = re.compile(r"\b(not sure|cannot|can't|unclear|impossible|assum\w+|approximately|"
                   r"estimate|however|but wait|mistake|incorrect|re-?evaluate)\b", re.IGNORECASE)


def _num(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", ""))
    except ValueError:
        return None


def has_final_number(answer: str) -> bool:
    """A number is present in the answer's last 200 characters."""
    return bool(NUMBER.search(answer[-200:]))


def states_answer(answer: str) -> bool:
    """The answer states a result ("the answer is 18", "#### 18", "= 18", "\\boxed{18}")."""
    return bool(FINAL.search(answer))


def arithmetic_holds(answer: str) -> bool:
    """Every 'a op b = c' written in the answer is right (to 1%), and there is at least one."""
    checked = 0
    for a, op, b, c in EQUATION.findall(answer):
        x, y, z = _num(a), _num(b), _num(c)
        if x is None or y is None or z is None:
            continue
        if op in "+":
            v = x + y
        elif op == "-":
            v = x - y
        elif op in "*x×":
            v = x * y
        else:
            if y == 0:
                return False
            v = x / y
        checked += 1
        if abs(v - z) > max(0.01 * abs(z), 0.011):
            return False
    return checked > 0


def no_hedging(answer: str) -> bool:
    """No words of doubt or self-correction ("not sure", "assuming", "mistake", ...)."""
    return not HEDGE.search(answer)


def short_enough(answer: str, limit: int = 900) -> bool:
    """Not a long, meandering answer (long answers are more often wrong on GSM8K)."""
    return len(answer) <= limit


GATES: dict[str, Callable[[str], bool]] = {
    "final number present": has_final_number,
    "states an answer": states_answer,
    "arithmetic holds": arithmetic_holds,
    "no hedging": no_hedging,
    "length <= 900 chars": short_enough,
    "all of the above": lambda a: (has_final_number(a) and states_answer(a)
                                   and arithmetic_holds(a) and no_hedging(a)
                                   and short_enough(a)),
}


def cascade(answers: Sequence[str], weak: np.ndarray, strong: np.ndarray,
            weak_cost: float) -> list[dict[str, Any]]:
    """For each gate: pass rate, precision and recall of "passes" for "the weak answer is
    right", and the cascade's quality and cost (weak always, strong when the gate fails; cost
    in strong calls, a weak call costing `weak_cost` of one)."""
    out = []
    for name, gate in GATES.items():
        passed = np.array([gate(a) for a in answers])
        quality = float(np.where(passed, weak, strong).mean())
        escalated = float(1 - passed.mean())
        tp = float((passed & (weak == 1)).sum())
        out.append({"gate": name, "pass_rate": float(passed.mean()),
                    "precision": tp / max(float(passed.sum()), 1.0),
                    "recall": tp / max(float((weak == 1).sum()), 1.0),
                    "quality": quality, "strong_calls": escalated,
                    "cost": weak_cost + escalated})
    return out
