"""``@guarded``: a plain Python function (sync or async) that runs only when approved.

::

    @guarded(guard, action="invoices.read", resource="invoice:{invoice_id}")
    def read_invoice(invoice_id: str) -> dict: ...

    read_invoice("INV-7")   # publishes an intent, runs on a verified approval, reports;
                            # raises Denied / NeedsReview / Unavailable / ... otherwise

The call's arguments are bound to the function's signature (defaults applied) and are
the tool call's arguments; the tool name is the function's name unless ``tool`` says
otherwise. Without ``action`` the guard's mapping decides (no mapping: denied).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from streams.sdk.guard.core import Guard
from streams.sdk.guard.mapping import ToolRule

__all__ = ["guarded"]

F = TypeVar("F", bound=Callable[..., Any])


def guarded(
    guard: Guard,
    *,
    action: str | None = None,
    resource: str | None = None,
    tool: str | None = None,
    parameters: Sequence[str] | None = None,
) -> Callable[[F], F]:
    if (action is None) != (resource is None):
        raise TypeError("give both action and resource, or neither (then the mapping decides)")
    rule = (
        ToolRule(action, resource, tuple(parameters or ()))
        if action is not None and resource is not None
        else None
    )

    def wrap(fn: F) -> F:
        name = tool or fn.__name__
        signature = inspect.signature(fn)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return dict(bound.arguments)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await guard.arun(
                    name, arguments(args, kwargs), lambda: fn(*args, **kwargs), rule=rule
                )

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return guard.run(name, arguments(args, kwargs), lambda: fn(*args, **kwargs), rule=rule)

        return cast(F, run)

    return wrap
