"""Batch rendering on Ray (the `batch` command; docs/BATCH.md): one job per clip on warm workers, one per GPU
or N on CPUs, on this machine or a cluster; resumable, and a worker killed mid-job loses no job.

Ray is imported only when a batch starts (requirements-batch.txt): the rest of the package, and the node pack
in ComfyUI's Python, never need it.
"""

from .comfy_api import parse_sets
from .driver import BatchError, BatchSettings, run_batch
from .ledger import RESULTS
from .manifest import MODEL_FIELDS

__all__ = ["MODEL_FIELDS", "RESULTS", "BatchError", "BatchSettings", "parse_sets", "run_batch"]
