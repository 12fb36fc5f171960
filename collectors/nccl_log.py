"""NCCL's log, for the collectors: parsing and attaching live in :mod:`tracekit.core`
(analysis must not need the collectors); this module keeps the collectors' imports working."""

from tracekit.core.nccl_attach import AttachResult, attach_nccl_log, attach_run_nccl_logs
from tracekit.core.nccl_log import (
    NCCL_DATATYPES,
    NCCL_LOG_COLUMNS,
    NCCL_REDOPS,
    parse_nccl_log,
    read_nccl_logs,
)

__all__ = ["AttachResult", "NCCL_DATATYPES", "NCCL_LOG_COLUMNS", "NCCL_REDOPS",
           "attach_nccl_log", "attach_run_nccl_logs", "parse_nccl_log", "read_nccl_logs"]
