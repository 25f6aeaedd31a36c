"""Kubernetes resource quantities (``500m``, ``2Gi``, ``1e3``), parsed exactly, to compare requests with limits.

The grammar is Kubernetes' own (``<signed number><suffix>``: binary suffixes Ki..Ei, decimal m, k, M..E, or an
exponent ``e<n>``/``E<n>``). Values are Fractions, so ``0.5`` and ``500m`` compare equal.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_EXPONENT = 30
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": Fraction(1, 1000), "": Fraction(1), "k": Fraction(10**3), "M": Fraction(10**6),
            "G": Fraction(10**9), "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18)}


def parse_quantity(value: str | int) -> Fraction:
    """The quantity's value; ValueError with the accepted forms when it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 500m, 2, 1.5, 512Mi or 8Gi")
    number, suffix = Fraction(match[1]), match[2] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    exponent = int(suffix[1:])
    if abs(exponent) > MAX_EXPONENT:  # 10**10000000 would take the operator seconds to compute
        raise ValueError(f"{value!r} has an exponent beyond {MAX_EXPONENT}; no resource is that large or small")
    return number * Fraction(10) ** exponent
