"""The store: the only part of the engine that touches files, in one namespace.

- :mod:`legcf_core.store_files`: atomic writes, checksums, the run directory's file names;
- :mod:`legcf_core.tensor_files`: safetensors files with a flat header, checked on read;
- :mod:`legcf_core.run_dir`: the run directory, its manifest and lock.

Stages use ``from legcf_core import artifacts as art`` and the names below.
"""

from legcf_core.run_dir import LOCK_FILE, RunDir, move_run_dir, remove_run_dir, remove_stale_temporaries
from legcf_core.store_files import (
    DATA_FILE,
    EXPORT_FILE,
    FORMAT,
    FORMAT_VERSION,
    MALFORMED_MANIFEST,
    MANIFEST,
    PARTITION_FILE,
    PRETRAIN_FILE,
    REFINE_FILE,
    STAGE_FILES,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
)
from legcf_core.tensor_files import (
    Malformed,
    MalformedManifest,
    checked,
    csr_arrays,
    csr_from_arrays,
    format_version,
    header,
    header_choice,
    header_int,
    ids_array,
    narrowed,
    read_metadata,
    read_tensors,
    require,
    serialize_tensors,
    write_tensors,
)

__all__ = [
    "DATA_FILE", "EXPORT_FILE", "FORMAT", "FORMAT_VERSION", "LOCK_FILE", "MALFORMED_MANIFEST", "MANIFEST",
    "PARTITION_FILE", "PRETRAIN_FILE", "REFINE_FILE", "STAGE_FILES", "Malformed", "MalformedManifest",
    "RunDir", "checked", "csr_arrays", "csr_from_arrays", "format_version", "header", "header_choice",
    "header_int", "ids_array", "narrowed", "move_run_dir", "read_metadata", "read_tensors", "remove_run_dir",
    "remove_stale_temporaries", "require", "serialize_tensors", "sha256_file", "write_bytes_atomic",
    "write_json_atomic", "write_tensors",
]  # fmt: skip
