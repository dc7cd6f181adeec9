"""InsightFacePack on tiny ONNX graphs that share buffalo_l's signatures (real onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curate.faces.backends.insightface_pack import (
    ArcFaceEmbedder,
    InsightFacePack,
    Landmark3D68,
    ScrfdDetector,
    locate_pack,
)
from curate.faces.boxes import nms
from curate.errors import ModelContractError, ModelPackError
from curate.records import DetectedFace
from curate.faces.runtimes import openvino_available
from tests.onnx_graphs import (
    CENTROID_POINT,
    DEFAULT_KEYPOINTS,
    arcface_graph,
    full_pack,
    landmark_graph,
    landmark_pattern,
    scrfd_graph,
    write_pack,
)


def square_image(shape, squares):
    """Black BGR image with filled squares given as (x1, y1, side, grey value)."""
    image = np.zeros((*shape, 3), np.uint8)
    for x1, y1, side, value in squares:
        image[y1 : y1 + side, x1 : x1 + side] = value
    return image


# 480×360 landscape: letterbox scale 4/3, so the 48 px square centred at (216, 168) lands as a
# 64 px square centred on the anchor (288, 224) = (9·32, 7·32) of the 640 detector input.
LANDSCAPE = ((360, 480), (192, 144, 48))
# 360×480 portrait (padding on the right): centre (168, 216) -> (224, 288).
PORTRAIT = ((480, 360), (144, 192, 48))
# 1440×1080, downscaled by 4/9: 144 px square centred at (648, 504) -> 64 px at (288, 224).
LARGE = ((1080, 1440), (576, 432, 144))


@pytest.fixture(scope="module")
def pack_root(module_dirs) -> Path:
    return full_pack(module_dirs("models"))


@pytest.fixture(scope="module")
def pack(pack_root) -> InsightFacePack:
    return InsightFacePack(pack_root, device="cpu")


def only_face(faces: list[DetectedFace]) -> DetectedFace:
    assert len(faces) == 1, [f.bbox for f in faces]
    return faces[0]


# --- pack layout and errors -------------------------------------------------------------------


def test_missing_models_dir_is_one_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelPackError) as caught:
        InsightFacePack(missing)
    text = str(caught.value)
    assert str(missing) in text and "does not exist" in text
    assert "buffalo_l" in text
    for name in ("det_10g.onnx", "1k3d68.onnx", "w600k_r50.onnx"):
        assert name in text
    assert "unzip" in text and str(missing / "buffalo_l" / "det_10g.onnx") in text
    assert "~/.insightface/models" in text
    assert text.count("MISSING") == 3


def test_missing_pack_folder_names_pack_dir(tmp_path):
    with pytest.raises(ModelPackError, match="buffalo_s") as caught:
        InsightFacePack(tmp_path, pack="buffalo_s")
    assert str(tmp_path / "buffalo_s") in str(caught.value)


def test_pack_missing_only_recogniser_names_that_file(tmp_path):
    write_pack(tmp_path, detector=scrfd_graph(), landmarks=landmark_graph())
    with pytest.raises(ModelPackError) as caught:
        InsightFacePack(tmp_path)
    text = str(caught.value)
    assert "incomplete" in text and str(tmp_path / "buffalo_l") in text
    embedder_line = next(line for line in text.splitlines() if "embedder" in line)
    assert "w600k_r50.onnx" in embedder_line and "MISSING" in embedder_line
    assert "found det_10g.onnx" in text and "found 1k3d68.onnx" in text
    assert text.count("MISSING") == 1


def test_models_dir_pointing_at_the_pack_itself_gets_a_hint(pack_root):
    with pytest.raises(ModelPackError, match="pass its parent"):
        InsightFacePack(pack_root / "buffalo_l")


def test_other_pack_file_names_and_preference_order(tmp_path):
    write_pack(
        tmp_path,
        "buffalo_s",
        detector=scrfd_graph(),
        landmarks=landmark_graph(),
        recogniser=arcface_graph(dim=128),
        detector_name="det_500m.onnx",
        recogniser_name="w600k_mbf.onnx",
    )
    small = InsightFacePack(tmp_path, pack="buffalo_s", device="cpu")
    assert [m.name for m in small.models] == [
        "buffalo_s/det_500m.onnx",
        "buffalo_s/1k3d68.onnx",
        "buffalo_s/w600k_mbf.onnx",
    ]
    assert small.embedding_dim == 128
    write_pack(tmp_path, "buffalo_s", detector=scrfd_graph(), recogniser=arcface_graph())
    files = locate_pack(tmp_path, "buffalo_s")
    assert files.detector.name == "det_10g.onnx" and files.recogniser.name == "w600k_r50.onnx"


# --- model contracts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "graphs, message",
    [
        (lambda: {"recogniser": arcface_graph(size=96)}, "112"),
        (lambda: {"landmarks": landmark_graph(size=128)}, "192"),
        (lambda: {"landmarks": landmark_graph(outputs=100)}, "3309"),
        (lambda: {"detector": scrfd_graph(with_keypoints=False)}, "keypoints"),
    ],
    ids=["recogniser-96px", "landmarks-128px", "landmarks-100-outputs", "detector-no-kps"],
)
def test_wrong_graph_signature_raises_contract_error(tmp_path, graphs, message):
    parts = {
        "detector": scrfd_graph(),
        "landmarks": landmark_graph(),
        "recogniser": arcface_graph(),
    }
    parts.update(graphs())
    write_pack(tmp_path, **parts)
    with pytest.raises(ModelContractError, match=message):
        InsightFacePack(tmp_path, device="cpu")


def test_wrappers_state_their_contracts():
    assert ScrfdDetector.normalisation.mean == 127.5 and ScrfdDetector.normalisation.std == 128.0
    assert Landmark3D68.normalisation.mean == 0.0 and Landmark3D68.normalisation.std == 1.0
    assert (
        ArcFaceEmbedder.normalisation.mean == 127.5 and ArcFaceEmbedder.normalisation.std == 127.5
    )
    assert all(m.normalisation.swap_rb for m in (ScrfdDetector, Landmark3D68, ArcFaceEmbedder))
    assert ScrfdDetector.strides == (8, 16, 32) and ScrfdDetector.anchors_per_cell == 2


# --- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout", [LANDSCAPE, PORTRAIT, LARGE], ids=["landscape", "portrait", "large"]
)
def test_detector_finds_the_square_and_its_keypoints(pack, layout):
    shape, (x1, y1, side) = layout
    face = only_face(pack.analyze([square_image(shape, [(x1, y1, side, 255)])])[0])
    np.testing.assert_allclose(face.bbox, [x1, y1, x1 + side, y1 + side], atol=2.0)
    assert face.det_score > 0.99
    assert face.bbox.dtype == np.float32 and face.landmarks5.shape == (5, 2)
    scale = side / 64.0  # source pixels per detector-input pixel
    expected = np.array([x1 + side / 2, y1 + side / 2]) + np.array(DEFAULT_KEYPOINTS) * scale
    np.testing.assert_allclose(face.landmarks5, expected, atol=2.0)


@pytest.mark.parametrize(
    "options",
    [{"input_size": 640}, {"batch_in_outputs": True}],
    ids=["fixed-640", "batched-outputs"],
)
def test_detector_graph_variants(tmp_path, options):
    variant = InsightFacePack(full_pack(tmp_path, **options), device="cpu")
    shape, (x1, y1, side) = LANDSCAPE
    face = only_face(variant.analyze([square_image(shape, [(x1, y1, side, 255)])])[0])
    np.testing.assert_allclose(face.bbox, [x1, y1, x1 + side, y1 + side], atol=2.0)


def test_nms_merges_overlapping_candidates(pack):
    shape, (x1, y1, side) = LANDSCAPE
    image = square_image(shape, [(x1, y1, side, 255)])
    candidates = pack.detector.candidates(image)
    assert len(candidates) > 5  # both anchors, neighbouring cells and all three strides fire
    assert len(pack.detector.detect(image)) == 1


def test_nms_function():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 4]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    # IoU(0, 1) = 81/119 > 0.4: merged into the higher-scoring 1; box 3 overlaps 0 at 0.4 exactly
    # but 1 at 27/(100+40-27) < 0.4: kept.
    assert nms(boxes, scores, 0.4).tolist() == [1, 2, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_faces_sorted_by_score_and_empty_images(pack):
    shape, (x1, y1, side) = LANDSCAPE
    two = square_image(shape, [(48, 48, 48, 200), (x1, y1, side, 255)])
    blank = np.zeros((100, 150, 3), np.uint8)
    faces_two, faces_blank = pack.analyze([two, blank])
    assert [round(float(f.bbox[0])) for f in faces_two] == [x1, 48]
    assert faces_two[0].det_score > faces_two[1].det_score > 0.5
    assert faces_blank == []
    assert pack.analyze([]) == []


def test_rejects_non_bgr_images(pack):
    with pytest.raises(ValueError, match="uint8"):
        pack.analyze([np.zeros((50, 50), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        pack.analyze([np.zeros((50, 50, 3), np.float32)])


# --- 68-point landmarks -----------------------------------------------------------------------


def test_landmarks_map_back_into_the_box(pack):
    shape, (x1, y1, side) = LANDSCAPE
    face = only_face(pack.analyze([square_image(shape, [(x1, y1, side, 255)])])[0])
    points = face.landmarks68
    assert points.shape == (68, 2) and points.dtype == np.float32
    bx1, by1, bx2, by2 = face.bbox
    assert np.all((points[:, 0] >= bx1) & (points[:, 0] <= bx2))
    assert np.all((points[:, 1] >= by1) & (points[:, 1] <= by2))
    # Crop space −1..1 spans 1.5 × the box side: a point v lands at centre + v · 0.75 · side.
    centre = np.array([(bx1 + bx2) / 2, (by1 + by2) / 2])
    expected = centre + landmark_pattern()[:, :2] * 0.75 * (bx2 - bx1)
    others = np.arange(68) != CENTROID_POINT
    np.testing.assert_allclose(points[others], expected[others], atol=1e-3)
    # The crop's brightness centroid maps back onto the square's centre (pixel-index centre).
    np.testing.assert_allclose(
        points[CENTROID_POINT], [x1 + side / 2 - 0.5, y1 + side / 2 - 0.5], atol=1.0
    )


def test_landmark_crop_and_inverse_agree_for_an_off_centre_box(tmp_path):
    # The box is shifted 8 detector px left and down of the square, so the square sits off-centre
    # in the landmark crop; its centroid must still map back onto the square in the source.
    shifted = InsightFacePack(full_pack(tmp_path, box=(40, 24, 24, 40)), device="cpu")
    shape, (x1, y1, side) = LANDSCAPE
    face = only_face(shifted.analyze([square_image(shape, [(x1, y1, side, 255)])])[0])
    box_centre = (face.bbox[:2] + face.bbox[2:]) / 2
    square_centre = np.array([x1 + side / 2 - 0.5, y1 + side / 2 - 0.5])
    assert np.abs(box_centre - square_centre).max() > 4.0
    np.testing.assert_allclose(face.landmarks68[CENTROID_POINT], square_centre, atol=1.0)


def test_landmarks_with_fixed_batch_graph_match_dynamic(tmp_path, pack):
    write_pack(
        tmp_path,
        detector=scrfd_graph(),
        landmarks=landmark_graph(batch=1),
        recogniser=arcface_graph(batch=1),
    )
    fixed = InsightFacePack(tmp_path, device="cpu")
    shape, (x1, y1, side) = LANDSCAPE
    image = square_image(shape, [(48, 48, 48, 200), (x1, y1, side, 255)])
    for a, b in zip(fixed.analyze([image])[0], pack.analyze([image])[0], strict=True):
        np.testing.assert_allclose(a.landmarks68, b.landmarks68, atol=1e-4)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


# --- embeddings -------------------------------------------------------------------------------


def test_embeddings_unit_norm_and_batch_equals_single_runs(pack):
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    batch = pack.embedder.embed(crops)
    singles = np.concatenate([pack.embedder.embed([crop]) for crop in crops])
    assert batch.shape == (3, 512) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, singles, atol=1e-5)

    shape, (x1, y1, side) = LANDSCAPE
    images = [square_image(shape, [(x1, y1, side, value)]) for value in (255, 230, 210)]
    together = [only_face(faces).embedding for faces in pack.analyze(images)]
    alone = [only_face(pack.analyze([image])[0]).embedding for image in images]
    np.testing.assert_allclose(np.stack(together), np.stack(alone), atol=1e-5)
    for embedding in together:
        assert embedding.shape == (pack.embedding_dim,) and embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-5


def test_identical_crops_give_cosine_one_and_different_crops_differ(pack):
    shape, (x1, y1, side) = LANDSCAPE
    # Two identical squares at different places (both centred on detector anchors).
    twins = square_image(shape, [(48, 48, 48, 255), (x1, y1, side, 255)])
    first, second = pack.analyze([twins])[0]
    assert float(first.embedding @ second.embedding) == pytest.approx(1.0, abs=1e-4)
    marked = twins.copy()
    marked[y1 + 4 : y1 + 16, x1 + 4 : x1 + 16] = 0  # a dark patch inside one square
    faces = sorted(pack.analyze([marked])[0], key=lambda face: face.bbox[0])
    assert len(faces) == 2
    assert float(faces[0].embedding @ faces[1].embedding) < 0.999


# --- metadata ---------------------------------------------------------------------------------


def test_providers_and_model_metadata(pack):
    assert "CPUExecutionProvider" in pack.providers
    assert pack.name == "insightface" and pack.embedding_dim == 512
    assert [m.role for m in pack.models] == ["detector", "landmarks68", "embedder"]
    assert [m.name for m in pack.models] == [
        "buffalo_l/det_10g.onnx",
        "buffalo_l/1k3d68.onnx",
        "buffalo_l/w600k_r50.onnx",
    ]
    assert all("non-commercial" in m.licence for m in pack.models)
    # The recogniser runs where large models run best on a CPU; the others stay on onnxruntime.
    embedder_runtime = "openvino" if openvino_available() else "onnxruntime"
    assert [m.runtime for m in pack.models] == ["onnxruntime", "onnxruntime", embedder_runtime]


@pytest.mark.skipif(not openvino_available(), reason="the openvino package is not installed")
def test_recogniser_gives_the_same_embeddings_on_either_runtime(pack_root):
    shape, (x1, y1, side) = LANDSCAPE
    image = square_image(shape, [(48, 48, 48, 255), (x1, y1, side, 200)])
    on_ort = InsightFacePack(pack_root, device="cpu", runtime="onnxruntime")
    on_openvino = InsightFacePack(pack_root, device="cpu", runtime="openvino")
    assert on_ort.embedder.providers == ["CPUExecutionProvider"]
    assert on_openvino.embedder.providers[0].startswith("OpenVINO/CPU/")
    first, second = on_ort.analyze([image])[0], on_openvino.analyze([image])[0]
    assert len(first) == len(second) == 2
    for a, b in zip(first, second):
        assert np.array_equal(a.landmarks68, b.landmarks68)  # only the recogniser moved
        assert float(a.embedding @ b.embedding) > 0.99
