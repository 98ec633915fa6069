"""Exercises with checked answers: ``check("02.1", my_function)`` runs the hidden tests of an exercise.

Each chapter ends with 4-8 exercises. A learner writes an answer (usually a function) in the notebook
and calls :func:`check`, which runs it on test inputs and says what is wrong (a wrong shape, a result
off by a factor, a case it misses) without ever printing the expected answer. The checks live in
``ch00.py``, ``ch01.py``, ... next to this file; the worked solutions live outside the package, in
``tests/exercise_solutions.py``, and ``make test`` asserts that every one of them passes its check and
that typical wrong answers fail with the right hint. Explained in notebook 00, §How to use the book.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable


class Wrong(AssertionError):
    """Raised by a checker: the answer is wrong, and the message says how (never what the answer is)."""


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    checker: Callable[[Any], str | None]  # raises Wrong, or returns an optional note shown on success


EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, title: str):
    """Register ``checker`` as the check of exercise ``id`` (``"NN.k"``)."""

    def register(checker: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        if id in EXERCISES:
            raise ValueError(f"exercise {id} is registered twice")
        EXERCISES[id] = Exercise(id, title, checker)
        return checker

    return register


def _returning(fn: Callable) -> Callable:
    """``fn``, with a clear verdict when it returns nothing (a function without ``return``)."""

    @functools.wraps(fn)
    def answer(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if out is None:
            raise Wrong("your function returned None: did you forget `return`?")
        return out

    return answer


def _learner_code(answer: Any, depth: int = 0) -> set:
    """The code objects the learner wrote in ``answer``: a function's, or the methods of their own class."""
    if isinstance(answer, functools.partial) and depth < 3:
        return _learner_code(answer.func, depth + 1)
    if inspect.isfunction(answer) or inspect.ismethod(answer):
        return _nested({inspect.unwrap(getattr(answer, "__func__", answer)).__code__})
    codes = set()
    for cls in (answer if isinstance(answer, type) else type(answer)).__mro__:
        if cls.__module__.split(".")[0] in ("builtins", "torch", "numpy", "vlm_primer"):
            continue  # a library's class: not what the learner wrote
        for attr in vars(cls).values():
            fn = getattr(attr, "__func__", getattr(attr, "fget", attr))
            if inspect.isfunction(fn):
                codes.add(fn.__code__)
    return _nested(codes)


def _nested(codes: set) -> set:
    """``codes`` and every function or lambda defined inside them (a closure the answer returns)."""
    todo, seen = list(codes), set()
    while todo:
        code = todo.pop()
        if code not in seen:
            seen.add(code)
            todo.extend(c for c in code.co_consts if inspect.iscode(c))
    return seen


def _raised_in(error: BaseException, codes: set) -> bool:
    """Whether ``error`` passed through one of ``codes`` (the learner's own code) on its way up."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in codes:
            return True
        tb = tb.tb_next
    return False


def check(id: str, answer: Any, quiet: bool = False) -> bool:
    """Check ``answer`` to exercise ``id``; print a one-line verdict and return whether it passed."""
    if not isinstance(id, str):
        raise TypeError(f"id must be an exercise id such as \"02.1\", got {type(id).__name__}")
    if id not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise ValueError(f"no exercise {id!r}; the exercises are {known}")
    ex = EXERCISES[id]
    try:
        note = ex.checker(_returning(answer) if inspect.isfunction(answer) else answer)
    except NotImplementedError:
        verdict, ok = "not attempted yet: write your answer, then run this check again", False
    except Wrong as e:
        verdict, ok = f"not yet: {e}", False
    except Exception as e:  # noqa: BLE001 - say how, briefly, and whose code it was
        if _raised_in(e, _learner_code(answer)):
            verdict, ok = f"your answer raised {type(e).__name__}: {e}", False
        else:
            verdict, ok = (f"the check could not use what your answer gave ({type(e).__name__}: {e}); "
                           "look at its type and shape"), False
    else:
        verdict, ok = "correct" + (f" ({note})" if note else ""), True
    if not quiet:
        print(f"{'✓' if ok else '✗'} {id} {ex.title}: {verdict}")
    return ok


def number(x: Any, what: str) -> float:
    """``x`` as a ``float``, or :class:`Wrong` naming ``what`` when it is not one number (a string, a list, ...)."""
    try:
        return float(x)
    except (TypeError, ValueError, RuntimeError):
        shape = f" of shape {tuple(x.shape)}" if hasattr(x, "shape") else ""
        raise Wrong(f"{what} should be one number, got {type(x).__name__}{shape}") from None


def whole(x: Any, what: str) -> int:
    """``x`` as an ``int``, or :class:`Wrong` naming ``what`` when it is not a number or not a whole one."""
    value = number(x, what)
    if not value.is_integer():
        raise Wrong(f"{what} is a whole number, got {x!r}")
    return int(x) if isinstance(x, int) else int(value)


def close(got, want, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Raise :class:`Wrong` unless ``got`` equals ``want`` (numbers or tensors) within tolerance."""
    import torch

    got_t = torch.as_tensor(got, dtype=torch.float64) if not isinstance(got, torch.Tensor) else got.double()
    want_t = torch.as_tensor(want, dtype=torch.float64) if not isinstance(want, torch.Tensor) else want.double()
    if got_t.shape != want_t.shape:
        raise Wrong(f"{what}: expected shape {tuple(want_t.shape)}, got {tuple(got_t.shape)}")
    if not torch.allclose(got_t, want_t, rtol=rtol, atol=atol):
        raise Wrong(f"{what}: the value is off")


from vlm_primer.exercises import ch00, ch01, ch02, ch03, ch04, ch04b, ch05, ch05b, ch06, ch06b, ch07, ch08  # noqa: E402,F401  (registers the exercises)

__all__ = ["EXERCISES", "Exercise", "Wrong", "check", "close", "exercise", "number", "whole"]
