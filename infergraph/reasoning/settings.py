"""Names the reference fixed, as settings: the jobspec suffix, the log name, the id delimiter.

Read from the environment (``INFERGRAPH_JOBSPEC_SUFFIX``, ``INFERGRAPH_REASONER_LOG``,
``INFERGRAPH_JOB_ID_DELIMITER``) so one deployment can match an existing bucket layout;
the defaults are the reference's.
"""

from __future__ import annotations

import os

JOBSPEC_SUFFIX = ".rdfoxjob.json"
LOG_NAME = "rdfox.log"
ID_DELIMITER = "_"


def jobspec_suffix() -> str:
    return os.environ.get("INFERGRAPH_JOBSPEC_SUFFIX") or JOBSPEC_SUFFIX


def log_name() -> str:
    return os.environ.get("INFERGRAPH_REASONER_LOG") or LOG_NAME


def id_delimiter() -> str:
    return os.environ.get("INFERGRAPH_JOB_ID_DELIMITER") or ID_DELIMITER
