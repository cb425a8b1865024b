"""Plain value classes for the resident daemon, without ``dataclasses`` and ``typing``.

Why not the stdlib: ``import dataclasses`` pulls in ``inspect``, ``ast`` and
``dis`` (1.4 MiB of RSS) and ``typing`` another 0.4 MiB; together that is more
than a tenth of the daemon's 16 MiB budget with 100 bots, for features it does
not use. :func:`record` does the part we use: ``__init__`` from the annotated
fields (in order, with defaults), then ``__post_init__`` if the class has one
(checks belong there, as with dataclasses), ``__repr__``, ``__eq__``,
``__hash__`` and immutability for frozen records, ``__match_args__`` for
``match``, and :func:`replace`. ``dataclass_transform`` tells mypy to check it
like a dataclass. Short-lived tools and tests may use dataclasses freely.

What it does not support it refuses when the class is defined, rather than
behave otherwise than a dataclass would: a mutable default (a list, dict or
set shared by every instance: use ``field(factory=list)``), a ``ClassVar``
(a dataclass skips it; here it would become a field). ``dataclasses.fields()``
and ``dataclasses.replace()`` do not apply: use :func:`fields` and
:func:`replace` from here.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy knows the name
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_kwargs):
        return lambda f: f


_MISSING: Any = object()


class Field:
    """A field's default (or factory) and metadata, as ``dataclasses.field`` holds them."""

    __slots__ = ("default", "factory", "metadata")

    def __init__(
        self, default: Any, factory: Callable[[], Any] | None, metadata: dict[str, Any]
    ) -> None:
        self.default = default
        self.factory = factory
        self.metadata = metadata


def field(
    *,
    default: Any = _MISSING,
    factory: Callable[[], Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """``items: list[int] = field(factory=list)``; ``x: int = field(default=1, metadata=...)``."""
    return Field(default, factory, metadata or {})


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T] | None = None, *, frozen: bool = True) -> Any:
    """Class decorator: see the module docstring."""

    def wrap(cls: type[T]) -> type[T]:
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 - no inspect here
        names = tuple(annotations)
        for n, annotation in annotations.items():
            if "ClassVar" in str(annotation):
                raise TypeError(f"{cls.__name__}.{n}: a ClassVar is not supported by record")
        defaults: dict[str, Any] = {}
        metadata: dict[str, dict[str, Any]] = {}
        for n in names:
            value = cls.__dict__.get(n, _MISSING)
            if isinstance(value, Field):
                metadata[n] = value.metadata
                value = value if value.factory is not None else value.default
            defaults[n] = value
        params, body = [], []
        env: dict[str, Any] = {"_MISSING": _MISSING, "_set": object.__setattr__}
        for n in names:
            default = defaults[n]
            if default is _MISSING:
                if any(defaults[m] is not _MISSING for m in names[: names.index(n)]):
                    raise TypeError(f"{cls.__name__}.{n}: a field without default follows one with")
                params.append(n)
                body.append(f"_set(self, {n!r}, {n})")
            elif isinstance(default, Field):
                env[f"_f_{n}"] = default.factory
                params.append(f"{n}=_MISSING")
                body.append(f"_set(self, {n!r}, _f_{n}() if {n} is _MISSING else {n})")
            else:
                if type(default).__hash__ is None:  # dataclasses' own test for "mutable"
                    raise TypeError(
                        f"{cls.__name__}.{n}: mutable default {type(default).__name__} would be "
                        "shared by every instance; use field(factory=...)"
                    )
                env[f"_d_{n}"] = default
                params.append(f"{n}=_d_{n}")
                body.append(f"_set(self, {n!r}, {n})")
        if "__post_init__" in cls.__dict__:
            body.append("self.__post_init__()")
        source = f"def __init__(self, {', '.join(params)}):\n    " + ("\n    ".join(body) or "pass")
        exec(source, env)
        init = env["__init__"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        kept = {n: d for n, d in defaults.items() if d is not _MISSING and not isinstance(d, Field)}
        members: dict[str, Any] = {
            "__init__": init,
            "__match_args__": names,
            "__record_fields__": names,
            "__record_metadata__": metadata,
            "__record_defaults__": kept,
        }

        def __repr__(self: object) -> str:
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{type(self).__name__}({inner})"

        def __eq__(self: object, other: object) -> bool:
            if type(other) is not type(self):
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        members["__repr__"] = __repr__
        members["__eq__"] = __eq__
        if frozen:

            def __hash__(self: object) -> int:
                return hash((type(self), *(getattr(self, n) for n in names)))

            members["__hash__"] = __hash__
            members["__setattr__"] = _frozen_setattr
        else:
            members["__hash__"] = None
        for attr, value in members.items():
            setattr(cls, attr, value)
        for n in names:  # class attributes would shadow nothing, but keep the class clean
            if n in cls.__dict__:
                delattr(cls, n)
        return cls

    return wrap if cls is None else wrap(cls)


def fields(obj_or_cls: object) -> tuple[str, ...]:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    names: tuple[str, ...] = cls.__record_fields__  # type: ignore[attr-defined]
    return names


def replace(obj: T, **changes: Any) -> T:
    values = {n: getattr(obj, n) for n in fields(obj)}
    values.update(changes)
    return type(obj)(**values)
