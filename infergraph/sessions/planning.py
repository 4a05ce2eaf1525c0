"""Session end: merge duplicate sightings, cluster items, pair clusters with containers.

Everything here is pure and deterministic (seeded k-means, tie-breaks on input
order), so the same session always gives the same commands.

Defined answers for the edge cases (the reference crashed or was arbitrary):

* no containers or no items → no commands;
* more containers than items → k = number of items; the assignment picks the
  containers that minimise travel (the reference kept the first ones);
* fewer distinct item embeddings than containers → fewer non-empty clusters than
  containers; each cluster still gets its own container;
* more clusters than containers (only when a caller asks for a larger k) → the
  containers first get one cluster each (optimally), every remaining cluster goes
  to the container nearest its items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

MERGE_TOLERANCE = 150.0
ITEM, CONTAINER = 0, 1


@dataclass(frozen=True, slots=True)
class Sighting:
    """One detected box in arm coordinates; ``key`` identifies its box in the store."""

    key: str
    class_id: int
    servo0: float
    servo1: float
    score: float
    image_name: str = ""
    box: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class PhysicalObject:
    """Sightings merged into one object: averaged position, best sighting kept for the crop."""

    servo0: float
    servo1: float
    best: Sighting
    members: tuple[str, ...] = field(default_factory=tuple)


def merge_duplicates(
    sightings: Sequence[Sighting], tolerance: float = MERGE_TOLERANCE
) -> list[PhysicalObject]:
    """Greedy merge of one class's sightings whose two coordinates are within ±tolerance.

    As the reference, an unmerged sighting absorbs every other unmerged one close
    to it and the position is their average; unlike it, seeds are taken in
    descending score (so the clearest view anchors each object) and the crop comes
    from the highest-score member rather than the first one seen.
    """
    order = sorted(range(len(sightings)), key=lambda i: (-sightings[i].score, i))
    taken = [False] * len(sightings)
    merged: list[PhysicalObject] = []
    for i in order:
        if taken[i]:
            continue
        seed = sightings[i]
        group = [seed]
        taken[i] = True
        for j in order:
            other = sightings[j]
            if (
                not taken[j]
                and abs(other.servo0 - seed.servo0) <= tolerance
                and abs(other.servo1 - seed.servo1) <= tolerance
            ):
                group.append(other)
                taken[j] = True
        merged.append(
            PhysicalObject(
                servo0=float(np.mean([s.servo0 for s in group])),
                servo1=float(np.mean([s.servo1 for s in group])),
                best=seed,
                members=tuple(s.key for s in group),
            )
        )
    return merged


def kmeans(
    points: np.ndarray, k: int, seed: int = 0, n_init: int = 8, iterations: int = 100
) -> np.ndarray:
    """Seeded k-means++ (Lloyd, best of ``n_init`` by inertia): one label per row.

    A few dozen points of a few hundred dimensions: plain numpy is enough and keeps
    scikit-learn out of the runtime dependencies.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if k < 1 or n == 0:
        raise ValueError(f"kmeans needs k ≥ 1 and at least one point, got k={k}, {n} points")
    k = min(k, n)
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = np.zeros(n, dtype=np.int64), np.inf
    for _ in range(n_init):
        centres = _kmeans_pp(points, k, rng)
        labels = np.full(n, -1)
        for _ in range(iterations):
            distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
            new_labels = distances.argmin(1)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
            for c in range(k):
                if np.any(labels == c):
                    centres[c] = points[labels == c].mean(0)
        inertia = float(((points - centres[labels]) ** 2).sum())
        if inertia < best_inertia - 1e-9:
            best_labels, best_inertia = labels.copy(), inertia
    return _relabel_by_first_appearance(best_labels)


def _kmeans_pp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = ((points[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1).min(1)
        total = d2.sum()
        index = rng.choice(len(points), p=d2 / total) if total > 0 else rng.integers(len(points))
        centres.append(points[index])
    return np.array(centres, dtype=np.float64)


def _relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Cluster ids in order of first item, so ids do not depend on the init."""
    mapping: dict[int, int] = {}
    for label in labels.tolist():
        mapping.setdefault(label, len(mapping))
    return np.array([mapping[label] for label in labels.tolist()], dtype=np.int64)


def travel(a: PhysicalObject, b: PhysicalObject) -> float:
    """Arm travel between two objects, in pulse widths (Euclidean over both servos)."""
    return float(np.hypot(a.servo0 - b.servo0, a.servo1 - b.servo1))


def assign_clusters(
    labels: Sequence[int], items: Sequence[PhysicalObject], containers: Sequence[PhysicalObject]
) -> dict[int, int]:
    """Cluster id → container index, minimising the total item→container travel.

    The cost of giving cluster c to container j is the sum of its items' travel
    to j; ``linear_sum_assignment`` solves the one-to-one part exactly and
    deterministically.
    """
    clusters = sorted(set(int(x) for x in labels))
    if not clusters or not containers:
        return {}
    cost = np.array(
        [
            [sum(travel(items[i], box) for i in _members(labels, c)) for box in containers]
            for c in clusters
        ]
    )
    rows, cols = linear_sum_assignment(cost)
    assignment = {clusters[r]: int(j) for r, j in zip(rows, cols, strict=True)}
    for r, c in enumerate(clusters):
        if c not in assignment:  # more clusters than containers: nearest container
            assignment[c] = int(np.argmin(cost[r]))
    return assignment


def _members(labels: Sequence[int], cluster: int) -> list[int]:
    return [i for i, label in enumerate(labels) if label == cluster]


Command = list[list[float]]


@dataclass(slots=True)
class Plan:
    """The session's answer: commands in pick order, and how they were decided."""

    commands: list[Command]
    items: list[PhysicalObject]
    containers: list[PhysicalObject]
    labels: list[int]
    assignment: dict[int, int]
    #: (item index, container index) per command, in the same order.
    pairs: list[tuple[int, int]] = field(default_factory=list)


def plan_session(
    items: Sequence[PhysicalObject],
    containers: Sequence[PhysicalObject],
    embeddings: np.ndarray | None,
    seed: int = 0,
) -> Plan:
    """Cluster the merged items into as many groups as containers and order the picks.

    Pick order: start with the item at the largest base PW (where the arm took its
    first picture), then always the item nearest the container just dropped into
    (fewer empty moves than the reference's detection order).
    """
    items, containers = list(items), list(containers)
    if not items or not containers:
        return Plan([], items, containers, [], {})
    k = min(len(containers), len(items))
    if embeddings is None or len(embeddings) != len(items):
        raise ValueError(
            f"need one embedding per item: {len(items)} items, "
            f"{0 if embeddings is None else len(embeddings)} embeddings"
        )
    labels = kmeans(embeddings, k, seed=seed).tolist() if k > 1 else [0] * len(items)
    assignment = assign_clusters(labels, items, containers)
    pairs = _pick_order([(i, assignment[lab]) for i, lab in enumerate(labels)], items, containers)
    commands = [
        [
            [round(items[i].servo0, 2), round(items[i].servo1, 2)],
            [round(containers[j].servo0, 2), round(containers[j].servo1, 2)],
        ]
        for i, j in pairs
    ]
    return Plan(commands, items, containers, labels, assignment, pairs)


def _pick_order(
    pairs: list[tuple[int, int]], items: list[PhysicalObject], containers: list[PhysicalObject]
) -> list[tuple[int, int]]:
    remaining = list(pairs)
    ordered: list[tuple[int, int]] = []
    # Start at the largest base PW, where the arm's first picture was taken.
    position = max(items, key=lambda o: (o.servo0, o.servo1))
    while remaining:
        nxt = min(remaining, key=lambda p: (travel(position, items[p[0]]), p[0]))
        remaining.remove(nxt)
        ordered.append(nxt)
        position = containers[nxt[1]]
    return ordered
