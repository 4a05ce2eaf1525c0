"""Pixel boxes → arm servo positions, with the reference arm's polar conversion.

The arm photographs the table from its base at one base-servo position (a pulse
width, PW) per picture; the picture's name is the only position data it sends
(``1400.jpg``). A box centre is turned into polar coordinates around the arm's
base (``arm_radius`` pixels below the picture's centre) and those into the two
servo pulse widths the arm moves to.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, PositiveFloat, ValidationError

_BASE_NAME = re.compile(r"^(\d{3,4})\.(?:jpe?g|png)$", re.IGNORECASE)


class ArmConstantsError(ValueError):
    """``arm_constants`` that cannot drive the conversion; the message names the field."""


class ImageNameError(ValueError):
    """An image name that does not encode a base position."""


class ArmConstants(BaseModel):
    """The constants the arm sends with ``get_commands_of_session``.

    Unknown fields (host, port, arm_id) are ignored: the arm sends them and the
    cloud has no use for them.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    arm_radius: PositiveFloat
    rotation_range_as_deg: PositiveFloat
    rotation_range_as_pw: PositiveFloat
    dist_min_as_pw: float
    dist_max_as_pw: float

    @classmethod
    def parse(cls, data: Any) -> ArmConstants:
        """Validate a JSON object, naming every missing or bad field in one error."""
        if not isinstance(data, dict):
            raise ArmConstantsError(
                f"arm_constants must be a JSON object, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].lower()}"
                for err in exc.errors()
            )
            raise ArmConstantsError(f"arm_constants: {problems}") from None


def base_position(image_name: str) -> int:
    """The base servo PW encoded in a picture's name (``1400.jpg`` → 1400)."""
    found = _BASE_NAME.match(image_name.rsplit("/", 1)[-1])
    if not found:
        raise ImageNameError(
            f"image name {image_name!r} does not encode a base position: "
            "expected '<pulse width>.jpg', e.g. '1400.jpg'"
        )
    return int(found.group(1))


@dataclass(frozen=True, slots=True)
class ArmPoint:
    """Where the arm goes for one box: base servo PW and reach servo PW."""

    servo0: float
    servo1: float


def box_to_arm(
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    base: float,
    constants: ArmConstants,
) -> ArmPoint:
    """Convert a box (x1, y1, x2, y2, absolute pixels) seen at base PW ``base``.

    Follows the reference exactly, including its integer box centre, so that an
    unchanged arm lands where it did before.
    """
    x1, y1, x2, y2 = box
    x = int((x1 + x2) / 2)
    y = int((y1 + y2) / 2)
    half_w, half_h = width / 2, height / 2
    radius = constants.arm_radius
    a = abs(half_w - x)
    b = half_h - y
    gamma = math.atan2(a, b + radius)
    dist = a / math.sin(gamma) if a else b + radius
    delta = constants.rotation_range_as_pw * math.degrees(gamma) / constants.rotation_range_as_deg
    if x > half_w:
        delta = -delta
    reach_pw = constants.dist_max_as_pw - constants.dist_min_as_pw
    servo1 = reach_pw * (dist - (radius - half_h)) / height + constants.dist_min_as_pw
    return ArmPoint(servo0=base + delta, servo1=servo1)
