"""The example transport model's shared code (importable by every step: the model folder
is on PYTHONPATH). Plain Python: GeoJSON networks, Dijkstra, BPR link costs."""

from __future__ import annotations

import heapq
import json
import os
from pathlib import Path
from typing import Any


def work_dir() -> Path:
    """The run's work folder: inputs/ and the outputs of earlier steps are under it."""
    return Path(os.environ.get("SCENARIO_WORK_DIR") or Path(__file__).resolve().parent.parent)


def read_json(rel: str) -> Any:
    return json.loads((work_dir() / rel).read_text())


def write_json(rel: str, data: Any) -> Path:
    path = work_dir() / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def load_network(params: dict[str, Any]) -> dict[str, Any]:
    """Nodes, links (free-flow minutes, capacity scaled by the scenario) and OD demand."""
    nodes = {
        f["properties"]["id"]: f["geometry"]["coordinates"]
        for f in read_json("inputs/road/nodes.geojson")["features"]
    }
    links = []
    for f in read_json("inputs/road/links.geojson")["features"]:
        p = f["properties"]
        if p["from"] not in nodes or p["to"] not in nodes:
            raise ValueError(f"link {p['id']} joins unknown nodes {p['from']}-{p['to']}")
        links.append(
            {
                "id": p["id"],
                "from": p["from"],
                "to": p["to"],
                "minutes": 60.0 * p["length_km"] / p["speed_kph"],
                "capacity": p["capacity"] * params.get("capacity_factor", 1.0),
            }
        )
    demand = [
        {
            "origin": f["properties"]["origin"],
            "destination": f["properties"]["destination"],
            "trips": f["properties"]["trips"] * params.get("demand_factor", 1.0),
        }
        for f in read_json("inputs/od/od.geojson")["features"]
    ]
    return {"nodes": nodes, "links": links, "demand": demand}


def shortest_path(links: list[dict[str, Any]], cost: dict[str, float], o: str, d: str) -> list[str]:
    """Link ids of the cheapest path from o to d (Dijkstra); ValueError if none."""
    out: dict[str, list[dict[str, Any]]] = {}
    for link in links:
        out.setdefault(link["from"], []).append(link)
    best, via, heap = {o: 0.0}, {}, [(0.0, o)]
    while heap:
        dist, node = heapq.heappop(heap)
        if node == d:
            break
        if dist > best.get(node, float("inf")):
            continue
        for link in out.get(node, []):
            nd = dist + cost[link["id"]]
            if nd < best.get(link["to"], float("inf")):
                best[link["to"]], via[link["to"]] = nd, link
                heapq.heappush(heap, (nd, link["to"]))
    if d not in best:
        raise ValueError(f"no path from {o} to {d}")
    path, node = [], d
    while node != o:
        path.append(via[node]["id"])
        node = via[node]["from"]
    return path[::-1]


def bpr(minutes: float, volume: float, capacity: float) -> float:
    """Congested travel time (Bureau of Public Roads curve)."""
    return minutes * (1 + 0.15 * (volume / capacity) ** 4)


def assign(network: dict[str, Any], method: str, increments: int = 4) -> dict[str, float]:
    """Link volumes: all-or-nothing on free-flow times, or incremental with BPR updates."""
    links = network["links"]
    volume = {link["id"]: 0.0 for link in links}
    steps = 1 if method == "all_or_nothing" else increments
    for _ in range(steps):
        cost = {
            link["id"]: bpr(link["minutes"], volume[link["id"]], link["capacity"]) for link in links
        }
        for od in network["demand"]:
            for link_id in shortest_path(links, cost, od["origin"], od["destination"]):
                volume[link_id] += od["trips"] / steps
    return volume
