"""Execute one notebook step: ``python -m infergraph.scenarios.nbrun IN OUT '<launcher_arg>'``.

Papermill runs the notebook on a real ipykernel, injecting ``launcher_arg`` (a dict)
as a parameter. ``sys.argv`` is set as the script-style steps see it, so notebooks
written for the reference deployment (which converted them to scripts and read
``sys.argv[1]``) run unchanged. Cell output is streamed to stdout as it comes, so a
step killed at its timeout still has its output up to that point in its log.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, target, arg = argv
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    notebook = nbformat.read(source, as_version=4)
    setup = f"import sys\nsys.argv = [{source!r}, {arg!r}]"
    notebook.cells.insert(0, nbformat.v4.new_code_cell(setup))
    try:
        papermill.execute_notebook(
            notebook,
            target,
            parameters={"launcher_arg": json.loads(arg)},
            kernel_name="python3",
            language="python",
            progress_bar=False,
            log_output=True,
            cwd=str(Path(source).parent),
        )
    except PapermillExecutionError as exc:
        print(f"notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
