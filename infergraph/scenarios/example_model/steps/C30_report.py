"""C30 Report: loaded links as GeoJSON (for a map) and a per-method summary CSV."""

import csv
import json

from transport import bpr, read_json, work_dir

outputs = work_dir() / "outputs"
network = read_json("outputs/network.json")
links = {link["id"]: link for link in network["links"]}
geometry = {
    f["properties"]["id"]: f["geometry"] for f in read_json("inputs/road/links.geojson")["features"]
}
rows = []
for path in sorted(outputs.glob("link_volumes_*.csv")):
    method = path.stem.removeprefix("link_volumes_")
    with path.open() as fh:
        volumes = {r["link_id"]: float(r["volume"]) for r in csv.DictReader(fh)}
    features, hours = [], 0.0
    for link_id, volume in volumes.items():
        link = links[link_id]
        minutes = bpr(link["minutes"], volume, link["capacity"])
        hours += volume * minutes / 60
        props = {
            "id": link_id,
            "volume": round(volume, 1),
            "v_over_c": round(volume / link["capacity"], 3),
            "minutes": round(minutes, 2),
        }
        features.append({"type": "Feature", "geometry": geometry[link_id], "properties": props})
    (outputs / f"loaded_links_{method}.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    worst = max(features, key=lambda f: f["properties"]["v_over_c"])["properties"]
    rows.append(
        {
            "method": method,
            "vehicle_hours": round(hours, 1),
            "worst_link": worst["id"],
            "worst_v_over_c": worst["v_over_c"],
        }
    )
with (outputs / "summary.csv").open("w", newline="") as fh:
    writer = csv.DictWriter(
        fh, fieldnames=["method", "vehicle_hours", "worst_link", "worst_v_over_c"]
    )
    writer.writeheader()
    writer.writerows(rows)
for row in rows:
    print(row)
print("end_of_notebook")
