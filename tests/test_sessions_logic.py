"""Session-end logic: coordinate conversion, duplicate merging, clustering, assignment."""

from __future__ import annotations

import numpy as np
import pytest

from infergraph.sessions.geometry import (
    ArmConstants,
    ArmConstantsError,
    ImageNameError,
    base_position,
    box_to_arm,
)
from infergraph.sessions.planning import (
    PhysicalObject,
    Sighting,
    assign_clusters,
    kmeans,
    merge_duplicates,
    plan_session,
)

# The constants of the reference's worked example (its test suite uses 1150..2050 for the
# reach servo; NOTES §6 lists 1100..2000 as example values, which give 1803.60 instead).
WORKED = ArmConstants(
    arm_radius=1500,
    rotation_range_as_deg=130,
    rotation_range_as_pw=1400,
    dist_min_as_pw=1150,
    dist_max_as_pw=2050,
)


def test_worked_example_of_the_reference() -> None:
    point = box_to_arm((1182, 240, 1355, 408), 1640, 1232, base_position("1200.jpg"), WORKED)
    assert (round(point.servo0, 2), round(point.servo1, 2)) == (1048.84, 1853.60)


def test_left_of_centre_adds_and_centre_line_is_straight_ahead() -> None:
    left = box_to_arm((100, 300, 200, 400), 1640, 1232, 1400, WORKED)
    assert left.servo0 > 1400
    ahead = box_to_arm((800, 600, 840, 632), 1640, 1232, 1400, WORKED)
    assert ahead.servo0 == 1400
    # On the centre line the reach is b + R: the picture centre is R pixels away.
    assert ahead.servo1 == pytest.approx(900 * (1500 - (1500 - 616)) / 1232 + 1150)


@pytest.mark.parametrize("name", ["S1.jpg", "abc.jpg", "1400", "1400.gif", "", "../1400.jpg.exe"])
def test_image_name_without_a_base_position_is_refused(name: str) -> None:
    with pytest.raises(ImageNameError, match="does not encode a base position"):
        base_position(name)


def test_arm_constants_name_the_missing_and_bad_fields() -> None:
    with pytest.raises(ArmConstantsError, match=r"arm_radius: field required.*rotation_range"):
        ArmConstants.parse({"rotation_range_as_deg": "x", "dist_min_as_pw": 1, "dist_max_as_pw": 2})
    with pytest.raises(ArmConstantsError, match="must be a JSON object"):
        ArmConstants.parse([1, 2])
    parsed = ArmConstants.parse({**WORKED.model_dump(), "host": "10.0.0.2", "port": 6000})
    assert parsed == WORKED


def sighting(key: str, s0: float, s1: float, score: float = 0.9, cls: int = 0) -> Sighting:
    return Sighting(key=key, class_id=cls, servo0=s0, servo1=s1, score=score)


def test_merge_groups_within_tolerance_and_keeps_the_best_crop() -> None:
    merged = merge_duplicates(
        [
            sighting("a", 1000, 1500, 0.6),
            sighting("b", 1100, 1600, 0.95),  # same object seen from the next position
            sighting("c", 1400, 1500, 0.8),  # 300 away in servo0: another object
            sighting("d", 1100, 1700, 0.7),  # within ±150 of b, not of a
        ]
    )
    assert [m.members for m in merged] == [("b", "d", "a"), ("c",)]  # members by score
    assert merged[0].best.key == "b"
    assert (merged[0].servo0, merged[0].servo1) == pytest.approx((1066.67, 1600), abs=0.01)


def test_merge_of_nothing_is_nothing() -> None:
    assert merge_duplicates([]) == []


def obj(key: str, s0: float, s1: float) -> PhysicalObject:
    return PhysicalObject(servo0=s0, servo1=s1, best=sighting(key, s0, s1), members=(key,))


def test_kmeans_is_seeded_and_finds_obvious_groups() -> None:
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.normal(0, 0.1, (6, 8)), rng.normal(5, 0.1, (5, 8))])
    labels = kmeans(points, 2, seed=7)
    assert labels.tolist() == [0] * 6 + [1] * 5
    assert kmeans(points, 2, seed=7).tolist() == labels.tolist()
    # Fewer distinct points than k: no crash, at most as many clusters as distinct points.
    assert len(set(kmeans(np.zeros((4, 3)), 3).tolist())) == 1


def test_assignment_minimises_total_travel() -> None:
    items = [obj("i0", 1000, 1500), obj("i1", 1010, 1510), obj("i2", 1700, 1500)]
    containers = [obj("near-i2", 1750, 1450), obj("near-i0", 950, 1450)]
    # Cluster 0 = the two items near container 1; the reference would pair 0 with 0.
    assert assign_clusters([0, 0, 1], items, containers) == {0: 1, 1: 0}
    # More clusters than containers: the extra cluster goes to its nearest container.
    assert assign_clusters([0, 1, 2], items, containers) == {0: 1, 1: 1, 2: 0}


def test_plan_edge_cases_have_defined_answers() -> None:
    items = [obj("i0", 1000, 1500), obj("i1", 1400, 1600)]
    containers = [obj("c0", 1200, 1900), obj("c1", 1000, 1300), obj("c2", 1400, 1700)]
    embeddings = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert plan_session(items, [], embeddings).commands == []
    assert plan_session([], containers, None).commands == []
    # More containers than items: each item gets the container nearest to it.
    plan = plan_session(items, containers, embeddings)
    assert sorted(plan.pairs) == [(0, 1), (1, 2)]
    assert len(plan.commands) == 2
    with pytest.raises(ValueError, match="one embedding per item"):
        plan_session(items, containers, embeddings[:1])


def test_plan_is_deterministic_and_ordered_by_travel() -> None:
    rng = np.random.default_rng(0)
    items = [obj(f"i{n}", 1000 + 80 * n, 1300 + 40 * (n % 4)) for n in range(10)]
    containers = [obj("c0", 1000, 1950), obj("c1", 1700, 1950)]
    embeddings = np.concatenate([rng.normal(0, 1, (5, 16)), rng.normal(6, 1, (5, 16))])
    first = plan_session(items, containers, embeddings, seed=1)
    again = plan_session(items, containers, embeddings, seed=1)
    assert first.commands == again.commands
    assert first.labels == [0] * 5 + [1] * 5
    assert first.assignment == {0: 0, 1: 1}
    assert first.pairs[0][0] == 9  # the arm starts at the largest base PW
    assert sorted(i for i, _ in first.pairs) == list(range(10))
