"""The pipeline stages, one module each: every stage reads earlier artifacts from a run
directory, calls the engine, and writes its own artifacts and manifest entry.

The CLI is a thin layer over these functions; they report progress through a
:class:`~legcf_core.progress.Reporter` and never print.
"""

from legcf_core.config import PartitionConfig, PrepareConfig, PretrainConfig, RefineConfig
from legcf_core.stages.evaluate import evaluate_run
from legcf_core.stages.export import ExportedModel, export, load_export
from legcf_core.stages.inputs import load_data, load_model, trained_layer
from legcf_core.stages.inspect import inspect_path
from legcf_core.stages.partition import partition
from legcf_core.stages.prepare import fingerprint, prepare, prepare_as
from legcf_core.stages.pretrain import pretrain
from legcf_core.stages.refine import refine
from legcf_core.stages.run import run_all

__all__ = [
    "ExportedModel",
    "PartitionConfig",
    "PrepareConfig",
    "PretrainConfig",
    "RefineConfig",
    "evaluate_run",
    "export",
    "fingerprint",
    "inspect_path",
    "load_data",
    "load_export",
    "load_model",
    "partition",
    "prepare",
    "prepare_as",
    "pretrain",
    "refine",
    "run_all",
    "trained_layer",
]
