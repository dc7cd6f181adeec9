"""DeepFaceLab interop: read and write the metadata DFL keeps in aligned JPEGs, import and export folders.

The parts: `errors`, `jpeg_segments` (APP15), `safe_pickle` (the restricted unpickler), `metadata`
(the typed record), `interop` (folders in and out). Their public names are re-exported here.

DFL stores a face's metadata as `pickle.dumps(dict)` in the JPEG's APP15 segment
(../shared/SAEHD.md §9). `pickle.loads` on a file from someone else runs whatever the file asks
for, so this module never calls it: `safe_loads` resolves only the few globals that plain values
and numpy arrays need, to stand-ins written here, and builds the arrays itself from validated
bytes. Everything else is refused before anything runs.
"""

from curate.interop.dfl.errors import (
    BadMetadataError,
    DflError,
    JpegStructureError,
    PayloadTooLargeError,
    UnsafeMetadataError,
)
from curate.interop.dfl.interop import (
    DflFaceRow,
    DflImportSummary,
    export_dfl,
    export_metadata,
    import_dfl_folder,
    read_dfl_rows,
)
from curate.interop.dfl.jpeg_segments import MAX_PAYLOAD, read_app15, write_app15
from curate.interop.dfl.metadata import (
    DFL_FACE_TYPES,
    FACESMITH_FACE_TYPES,
    DflFaceMetadata,
    SegPolygon,
    dfl_pickle,
    encode_dfl_jpeg,
    parse_dfl_metadata,
    read_dfl_metadata,
)
from curate.interop.dfl.safe_pickle import ALLOWED_GLOBALS, safe_loads

__all__ = [
    "ALLOWED_GLOBALS", "BadMetadataError", "DFL_FACE_TYPES", "DflError", "DflFaceMetadata", "DflFaceRow",
    "DflImportSummary", "FACESMITH_FACE_TYPES", "JpegStructureError", "MAX_PAYLOAD", "PayloadTooLargeError",
    "SegPolygon", "UnsafeMetadataError", "dfl_pickle", "encode_dfl_jpeg", "export_dfl", "export_metadata",
    "import_dfl_folder", "parse_dfl_metadata", "read_app15", "read_dfl_metadata", "read_dfl_rows",
    "safe_loads", "write_app15",
]
