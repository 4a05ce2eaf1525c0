"""B20 Assign: route the OD demand over the network (`python B20_assign.py '<launcher_arg>'`).

launcher_arg.method: all_or_nothing (free-flow shortest paths, the default) or incremental
(demand loaded in four slices, link times updated with the BPR curve between slices).
"""

import json
import sys

from transport import assign, read_json, work_dir

arg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
method = arg.get("method", "all_or_nothing")
network = read_json("outputs/network.json")
volumes = assign(network, method)
out = work_dir() / "outputs" / f"link_volumes_{method}.csv"
with out.open("w") as fh:
    fh.write("link_id,volume\n")
    for link_id, volume in sorted(volumes.items()):
        fh.write(f"{link_id},{volume:.1f}\n")
busiest = max(volumes, key=volumes.get)
print(f"{method}: busiest link {busiest} carries {volumes[busiest]:.0f} trips -> {out.name}")
