"""Model folders for the scenario tests: real notebooks and scripts, written on the fly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat

#: The reference template's Retry blocks (Lambda errors: never raised by local steps).
REFERENCE_RETRY = [
    {
        "ErrorEquals": [
            "Lambda.ServiceException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException",
        ],
        "IntervalSeconds": 2,
        "MaxAttempts": 2,
        "BackoffRate": 2,
    },
    {"ErrorEquals": ["Lambda.AWSLambdaException"], "IntervalSeconds": 30, "MaxAttempts": 4,
     "BackoffRate": 2},
]  # fmt: skip


def write_notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def reference_task(path: str, nxt: str | None) -> dict[str, Any]:
    """A state shaped as the reference template writes it."""
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "OutputPath": "$.Payload",
        "Parameters": {
            "FunctionName": "arn:aws:lambda:eu-west-2:123456789012:function:model:$LATEST",
            "Payload": {
                "notebook_path": path,
                "scenario_path_S3.$": "$.scenario_path_S3",
                "launcher_arg.$": "$.launcher_arg",
                "metadata.$": "$.metadata",
            },
        },
        "Retry": REFERENCE_RETRY,
    }
    state.update({"Next": nxt} if nxt else {"End": True})
    return state


def reference_definition(steps: list[tuple[str, str]]) -> dict[str, Any]:
    """Authorization, then each (state name, notebook path) chained by Next."""
    states: dict[str, Any] = {
        "Authorization": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "OutputPath": "$.Payload",
            "Parameters": {
                "FunctionName": "arn:aws:lambda:eu-west-2:123456789012:function:auth:$LATEST",
                "Payload": {
                    "authorization.$": "$.authorization",
                    "model": "m",
                    "choice.$": "$.choice",
                },
            },
            "Retry": REFERENCE_RETRY,
            "Next": steps[0][0],
        }
    }
    for i, (name, path) in enumerate(steps):
        states[name] = reference_task(path, steps[i + 1][0] if i + 1 < len(steps) else None)
    return {"StartAt": "Authorization", "States": states}


def write_model(root: Path, definition: dict[str, Any], files: dict[str, str]) -> Path:
    """A model folder: step-functions.json, the given files, an authorization.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "step-functions.json").write_text(json.dumps(definition, indent=1))
    (root / "authorization.yaml").write_text(
        "users: [ann@example.com]\ngroups: {team: [bo@example.com]}\nallowed_groups: [team]\n"
    )
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


#: Step 1 (notebook): read the scenario's params, write outputs/total.json.
NOTEBOOK_1 = (
    "import json, sys\nfrom helpers import work\narg = json.loads(sys.argv[1])\n"
    "params = json.loads((work() / 'inputs/params.json').read_text())\n"
    "(work() / 'outputs').mkdir(exist_ok=True)\n"
    "(work() / 'outputs/total.json').write_text(json.dumps({'total': sum(params['xs']) * "
    "arg.get('scale', 1)}))\nprint('Error: a word in the output does not fail a step')"
)
#: Step 2 (notebook): read step 1's output (downloaded from the store), write a CSV.
NOTEBOOK_2 = (
    "import json\nfrom helpers import work\n"
    "total = json.loads((work() / 'outputs/total.json').read_text())['total']\n"
    "(work() / 'outputs/report.csv').write_text(f'total\\n{total}\\n')\nprint('end_of_notebook')"
)
HELPERS = "import os\nfrom pathlib import Path\n\ndef work():\n    return Path(os.environ['SCENARIO_WORK_DIR'])\n"  # noqa: E501
