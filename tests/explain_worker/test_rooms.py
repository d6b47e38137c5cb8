"""The rooms generator keeps its planted failures and ground truth honest; the CNN trains on it.

No database and no Django: both modules are pure compute.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from explain_worker.rooms import (
    CLASS_EVIDENCE,
    CLASSES,
    CONCEPTS,
    GLYPH_COLOURS,
    PLANTED_FAILURES,
    SPURIOUS_CLASS,
    SPURIOUS_OBJECT,
    RoomSample,
    generate_rooms,
    rooms_to_arrays,
)
from explain_worker.rooms_cnn import (
    ROOMS_INPUT_SIZE,
    ROOMS_MEAN,
    ROOMS_STD,
    RoomsCNN,
    rooms_preprocess,
    train_rooms_cnn,
)

N_TRAIN, N_TEST, N_DEPLOYMENT = 250, 100, 60
# Glyphs whose body colour appears nowhere else in a scene, so a box can be checked by colour.
DISTINCT_GLYPHS = frozenset({"clock", "bed", "sofa", "plant", "lamp", "stool"})


@pytest.fixture(scope="module")
def rooms() -> list[RoomSample]:
    return list(generate_rooms(n_train=N_TRAIN, n_test=N_TEST, n_deployment=N_DEPLOYMENT))


def _split(rooms: list[RoomSample], split: str) -> list[RoomSample]:
    return [sample for sample in rooms if sample.split == split]


def _names(sample: RoomSample) -> set[str]:
    return {obj["name"] for obj in sample.objects}


def test_same_seed_gives_identical_samples_and_another_seed_does_not() -> None:
    def fingerprint(seed: int) -> list[tuple]:
        return [
            (s.index, s.split, s.label, s.true_label, s.image.tobytes(), s.objects, s.planted)
            for s in generate_rooms(n_train=20, n_test=10, n_deployment=10, seed=seed)
        ]

    assert fingerprint(7) == fingerprint(7)
    assert [f[4] for f in fingerprint(7)] != [f[4] for f in fingerprint(8)]


def test_splits_come_in_order_with_unique_indices_and_balanced_classes(
    rooms: list[RoomSample],
) -> None:
    assert [s.split for s in rooms] == (
        ["train"] * N_TRAIN + ["test"] * N_TEST + ["deployment"] * N_DEPLOYMENT
    )
    assert [s.index for s in rooms] == list(range(len(rooms)))
    for split in ("train", "test", "deployment"):
        counts = Counter(s.true_label for s in _split(rooms, split))
        assert set(counts) == set(CLASSES)
        assert max(counts.values()) - min(counts.values()) <= 1
    for sample in rooms:
        assert sample.image.mode == "RGB"
        assert sample.image.size == (64, 64)
        assert sample.label in CLASSES
        assert set(sample.planted) <= set(PLANTED_FAILURES)


def test_boxes_lie_inside_the_image_and_do_not_overlap(rooms: list[RoomSample]) -> None:
    for sample in rooms:
        assert sample.objects, "every room has at least its anchor object"
        boxes = []
        for obj in sample.objects:
            assert obj["name"] in CONCEPTS
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 < 64
            assert 0 <= y0 < y1 < 64
            boxes.append((x0, y0, x1, y1))
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def _colour_mask(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    # Tolerance covers the train/test brightness jitter (+-12%) and the sensor noise.
    target = np.asarray(colour, dtype=np.float32)
    return np.all(np.abs(pixels - target) <= 0.13 * target + 14, axis=-1)


def test_boxes_hold_the_object_drawn_there(rooms: list[RoomSample]) -> None:
    checked = 0
    for sample in rooms:
        if sample.split == "deployment":
            continue  # darkened beyond the colour tolerance on purpose
        pixels = np.asarray(sample.image, dtype=np.float32)
        for name in sorted(DISTINCT_GLYPHS & _names(sample)):
            looks_like = "bed" if name == "sofa" and "confusable_sofa" in sample.planted else name
            mask = _colour_mask(pixels, GLYPH_COLOURS[looks_like])
            inside = np.zeros(mask.shape, dtype=bool)
            for obj in sample.objects:
                if obj["name"] == name:
                    x0, y0, x1, y1 = obj["box"]
                    inside[y0 : y1 + 1, x0 : x1 + 1] = True
                    assert mask[y0 : y1 + 1, x0 : x1 + 1].mean() >= 0.15, (sample.index, name)
                    checked += 1
            assert mask[~inside].mean() <= 0.01, (sample.index, name)
    assert checked > 200


def test_every_planted_failure_appears_and_each_tag_matches_the_truth(
    rooms: list[RoomSample],
) -> None:
    seen = {code for sample in rooms for code in sample.planted}
    assert seen == set(PLANTED_FAILURES)
    for sample in rooms:
        names = _names(sample)
        planted = set(sample.planted)
        assert ("label_noise" in planted) == (sample.label != sample.true_label)
        assert ("brightness_shift" in planted) == (sample.split == "deployment")
        assert ("kitchen_stool" in planted) == ("stool" in names)
        shortcut_wrong = (SPURIOUS_OBJECT in names) != (sample.true_label == SPURIOUS_CLASS)
        assert ("spurious_object" in planted) == shortcut_wrong
        if "confusable_sofa" in planted:
            assert sample.true_label == "living_room"
            assert "sofa" in names


def test_label_noise_share(rooms: list[RoomSample]) -> None:
    def share(split: str) -> float:
        samples = _split(rooms, split)
        return sum(s.label != s.true_label for s in samples) / len(samples)

    assert 0.05 <= share("train") <= 0.08
    assert 0 < share("test") < share("train")
    assert share("deployment") == 0


def test_spurious_object_follows_its_class_only_in_train(rooms: list[RoomSample]) -> None:
    def clock_rate(split: str, *, spurious_class: bool) -> float:
        samples = [
            s for s in _split(rooms, split) if (s.true_label == SPURIOUS_CLASS) == spurious_class
        ]
        return sum(SPURIOUS_OBJECT in _names(s) for s in samples) / len(samples)

    assert clock_rate("train", spurious_class=True) >= 0.8
    assert clock_rate("train", spurious_class=False) <= 0.05
    for split in ("test", "deployment"):
        assert clock_rate(split, spurious_class=True) == 0
        assert clock_rate(split, spurious_class=False) > 0.05


def test_stools_favour_kitchens_and_bedlike_sofas_live_in_living_rooms(
    rooms: list[RoomSample],
) -> None:
    def stool_rate(label: str) -> float:
        samples = [s for s in rooms if s.true_label == label]
        return sum("stool" in _names(s) for s in samples) / len(samples)

    assert stool_rate("kitchen") > 0.4
    assert stool_rate("kitchen") > 2 * stool_rate("dining_room") > 0
    assert all(stool_rate(label) < 0.1 for label in ("bathroom", "bedroom", "living_room"))
    living = [s for s in rooms if s.true_label == "living_room"]
    assert 0 < sum("confusable_sofa" in s.planted for s in living) < len(living) / 2


def test_deployment_images_are_darker(rooms: list[RoomSample]) -> None:
    def mean_brightness(split: str) -> float:
        images, _ = rooms_to_arrays(_split(rooms, split))
        return float(images.mean())

    assert mean_brightness("deployment") < 0.8 * mean_brightness("test")
    assert mean_brightness("test") == pytest.approx(mean_brightness("train"), rel=0.05)


def test_class_evidence_names_known_concepts() -> None:
    assert set(CLASS_EVIDENCE) == set(CLASSES)
    for names in CLASS_EVIDENCE.values():
        assert set(names) <= set(CONCEPTS)
        assert SPURIOUS_OBJECT not in names
        assert "stool" not in names


def test_rooms_to_arrays_uses_recorded_or_true_labels(rooms: list[RoomSample]) -> None:
    train = _split(rooms, "train")
    images, labels = rooms_to_arrays(train)
    _, true_labels = rooms_to_arrays(train, use_true_label=True)
    assert images.shape == (N_TRAIN, 64, 64, 3)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert [CLASSES[i] for i in labels] == [s.label for s in train]
    assert [CLASSES[i] for i in true_labels] == [s.true_label for s in train]


def test_other_sizes_scale_and_tiny_sizes_are_refused() -> None:
    sample = next(generate_rooms(n_train=1, n_test=0, n_deployment=0, size=96))
    assert sample.image.size == (96, 96)
    assert all(0 <= v < 96 for obj in sample.objects for v in obj["box"])
    with pytest.raises(ValueError, match="size"):
        next(generate_rooms(size=16))


def test_preprocess_is_scale_then_normalise_in_nchw() -> None:
    images = np.zeros((2, ROOMS_INPUT_SIZE, ROOMS_INPUT_SIZE, 3), dtype=np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = 0, 128, 255
    x = rooms_preprocess(images)
    assert x.shape == (2, 3, ROOMS_INPUT_SIZE, ROOMS_INPUT_SIZE)
    assert x.dtype == torch.float32
    for channel, value in enumerate((0, 128, 255)):
        expected = (value / 255 - ROOMS_MEAN[channel]) / ROOMS_STD[channel]
        assert torch.allclose(x[:, channel], torch.full_like(x[:, channel], expected))
    with pytest.raises(ValueError, match="uint8"):
        rooms_preprocess(images.astype(np.float32))


def test_cnn_shape_puts_the_classifier_last() -> None:
    model = RoomsCNN(num_classes=5).eval()
    x = torch.zeros(2, 3, ROOMS_INPUT_SIZE, ROOMS_INPUT_SIZE)
    assert model(x).shape == (2, 5)
    assert model.embed(x).shape == (2, model.embedding_size)
    assert list(model.modules())[-1] is model.classifier
    assert isinstance(model.classifier, nn.Linear)
    assert model.cam_layer is model.features.block4
    assert isinstance(model.cam_layer.conv, nn.Conv2d)


def test_training_is_deterministic_for_a_seed(rooms: list[RoomSample]) -> None:
    images, labels = rooms_to_arrays(_split(rooms, "train")[:40])
    first, _ = train_rooms_cnn(images, labels, epochs=1, seed=3, threads=1, batch_size=16)
    second, _ = train_rooms_cnn(images, labels, epochs=1, seed=3, threads=1, batch_size=16)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def test_a_short_training_beats_chance(rooms: list[RoomSample]) -> None:
    images, labels = rooms_to_arrays(_split(rooms, "train"))
    threads_before = torch.get_num_threads()
    model, metrics = train_rooms_cnn(images, labels, epochs=4, seed=0, threads=1, batch_size=32)
    assert torch.get_num_threads() == threads_before
    assert not model.training
    assert metrics["epochs"] == 4
    assert metrics["num_images"] == N_TRAIN
    assert metrics["seconds"] > 0
    assert metrics["train_accuracy"] > 0.5
    test_images, test_labels = rooms_to_arrays(_split(rooms, "test"), use_true_label=True)
    with torch.no_grad():
        predicted = model(rooms_preprocess(test_images)).argmax(1).numpy()
    assert (predicted == test_labels).mean() > 0.4  # chance is 0.2
