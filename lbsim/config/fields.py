"""What every config section shares: the choice enum base, the field checks that raise one-line
errors naming the field, the value and what is allowed, and the dict/TOML conversion."""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from typing import Any

from ..durations import Duration, Fixed, duration_to_toml, parse_duration

__all__ = ["MAX_NODES", "MAX_PODS", "MAX_CLIENTS"]

# Limits that come from how tuples are packed into 64-bit keys (see lbsim.tuples).
MAX_NODES = (1 << 14) - 1
MAX_PODS = (1 << 20) - 1
MAX_CLIENTS = (1 << 24) - 1


class _Choice(str, enum.Enum):
    """A config choice: prints and formats as its value ("5.x", not "NatKernel.V5")."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def _fail(name: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ValueError(f"{name} = {value!r} is invalid: must be {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(name: str, v: Any, lo: int, hi: int | None = None) -> None:
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        _fail(name, v, f"an integer in [{lo}, {hi if hi is not None else 'inf'}]")


def _check_float(name: str, v: Any, *, positive: bool = False) -> None:
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and (v > 0 if positive else v >= 0))
    if not ok:
        _fail(name, v, "a finite number > 0" if positive else "a finite number >= 0")


def _check_port_range(name: str, v: Any) -> None:
    ok = (isinstance(v, tuple) and len(v) == 2 and all(_is_int(p) for p in v)
          and 1 <= v[0] <= v[1] <= 65535)
    if not ok:
        _fail(name, v, "[low, high] with 1 <= low <= high <= 65535")


def _check_enum(name: str, v: Any, kind: type[enum.Enum]) -> None:
    if not isinstance(v, kind):
        _fail(name, v, f"one of {[m.value for m in kind]}")


class _Section:
    """Shared validation and dict conversion for config sections."""

    _prefix: typing.ClassVar[str] = ""

    def _name(self, f: str) -> str:
        return f"{self._prefix}.{f}" if self._prefix else f

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = _plain(v)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], prefix: str | None = None) -> Any:
        prefix = cls._prefix if prefix is None else prefix
        if not isinstance(data, dict):
            _fail(prefix or "scenario", data, "a table of settings")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            where = f"[{prefix}]" if prefix else "the top level"
            raise ValueError(f"unknown key {prefix + '.' if prefix else ''}{unknown[0]} in {where}: "
                             f"valid keys are {names}")
        kwargs = {k: _parse(f"{prefix}.{k}" if prefix else k, hints[k], v) for k, v in data.items()}
        return cls(**kwargs)


def _plain(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (Fixed,)) or type(v).__module__.endswith("durations"):
        return duration_to_toml(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, _Section):
        return v.to_dict()
    return v


def _parse(name: str, hint: Any, v: Any) -> Any:
    """Turn a plain TOML value into the field's type; leave validation to ``__post_init__``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(v)
        except ValueError:
            _fail(name, v, f"one of {[m.value for m in hint]}")
    if hint is Duration or (args and Fixed in args):
        return parse_duration(name, v)
    if origin in (tuple, typing.Union) or isinstance(hint, type(int | None)):
        return tuple(v) if isinstance(v, list) else v
    if isinstance(hint, type) and issubclass(hint, _Section):
        return hint.from_dict(v, name)
    return v


def _is_prime(m: int) -> bool:
    return m >= 2 and all(m % d for d in range(2, math.isqrt(m) + 1))
