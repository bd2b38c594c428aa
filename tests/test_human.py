"""The human-study kit: assignments, the MTurk batch export, the results import (round trip) and Table 2."""

from __future__ import annotations

import csv
import hashlib
import os
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from advlib.human import StudyItem, export_batch, import_results, label_table, make_assignments, write_images


def _items(n=60):
    return [
        StudyItem(f"img{i:03d}", "critic" if i % 2 else "reference", "lenet5", i % 10, (i + 3) % 10, 0.95)
        for i in range(n)
    ]


def test_assignments_are_seeded_complete_and_sized():
    items = _items()
    a, b = make_assignments(items, 25, seed=1), make_assignments(items, 25, seed=1)
    assert a == b and [len(x) for x in a] == [25, 25, 10]
    assert sorted(i.image_id for x in a for i in x) == sorted(i.image_id for i in items)
    with pytest.raises(ValueError, match="unique"):
        make_assignments(items + items[:1])


def test_export_then_import_round_trips_the_answers(tmp_path):
    items = _items()
    assignments = make_assignments(items, 25, seed=0)
    files = export_batch(assignments, tmp_path, "https://example.org/study")
    assert "${image_25_url}" in files["hit"].read_text() and 'name="label_25"' in files["hit"].read_text()
    batch = list(csv.DictReader(open(files["batch"])))
    assert len(batch) == 3 and batch[0]["image_1_url"] == f"https://example.org/study/{batch[0]['image_1_id']}.png"
    # a results file as MTurk writes it: Input.* echoes the batch row, Answer.* holds the worker's labels
    truth = {item.image_id: (item.target if int(item.image_id[3:]) % 3 else item.original) for item in items}
    with open(tmp_path / "results.csv", "w", newline="") as handle:
        writer = None
        for row in batch:
            out = {"WorkerId": "W1", **{f"Input.{k}": v for k, v in row.items()}}
            out.update(
                {f"Answer.label_{k}": truth[row[f"image_{k}_id"]] if row[f"image_{k}_id"] else "" for k in range(1, 26)}
            )
            if writer is None:
                writer = csv.DictWriter(handle, fieldnames=list(out))
                writer.writeheader()
            writer.writerow(out)
    answers = import_results(tmp_path / "results.csv")
    assert dict(zip(answers.image_id, answers.label)) == truth
    table = label_table(answers, pd.read_csv(files["items"]))
    ids = {item.image_id: item for item in items}
    for (defense, _network), row in table.iterrows():
        chosen = [i for i in ids.values() if i.defense == defense]
        assert row["target_percent"] == pytest.approx(
            100 * sum(truth[i.image_id] == i.target for i in chosen) / len(chosen)
        )


def test_images_are_written_as_png(tmp_path):
    paths = write_images(torch.rand(2, 1, 28, 28), ["a", "b"], tmp_path)
    assert [p.name for p in paths] == ["a.png", "b.png"] and Image.open(paths[0]).size == (28, 28)


def test_import_refuses_a_foreign_file(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no Input.image_k_id"):
        import_results(tmp_path / "x.csv")


def test_sheet_has_one_numbered_tile_per_image(tmp_path):
    from advlib.human import write_sheet

    images = torch.zeros(7, 1, 28, 28)
    images[3] = 1.0  # one white tile among black ones
    path = write_sheet(images, tmp_path / "sheet.png", columns=5, scale=2)
    sheet = np.asarray(Image.open(path))
    # 5 columns x 2 rows of 56 px tiles with 6 px padding and a 14 px number strip above each tile
    assert sheet.shape == (2 * (56 + 14 + 6) + 6, 5 * (56 + 6) + 6)
    left, top = 6 + 3 * (56 + 6), 6 + 14
    assert sheet[top : top + 56, left : left + 56].min() == 255  # tile 4 is the white image
    assert sheet[top : top + 56, left - 62 : left - 6].max() == 0  # tile 3 is black
    with pytest.raises(ValueError, match="at least one image"):
        write_sheet(images[:0], tmp_path / "empty.png")


def test_proxy_answers(mnist_model, mnist_test):
    from advlib.human import anonymous_id, proxy_answers

    x = mnist_test[0][:12]
    ids = [anonymous_id(SECRET, "lenet5", "critic", 0, i) for i in range(12)]
    answers = proxy_answers(mnist_model, x, ids, batch_size=5)
    assert list(answers.columns) == ["worker", "image_id", "label"] and (answers.worker == "proxy").all()
    assert answers.image_id.tolist() == ids
    assert answers.label.tolist() == mnist_model(x).argmax(1).tolist()
    with pytest.raises(ValueError, match="12 images but 3 ids"):
        proxy_answers(mnist_model, x, ids[:3])


SECRET = bytes(range(16))
NETWORKS = ["mlp1200", "lenet5"]
DEFENSES = {"reference": "Reference", "at": "AT [7]", "vat": "VAT [16]", "margin": "Margin [19]", "critic": "Our"}


def _grid(secret=SECRET):
    """(id, network, defense, seed, index) for 2 networks x 5 defenses x 2 seeds x 30 images."""
    from advlib.human import anonymous_id

    return [
        (anonymous_id(secret, n, d, s, i), n, d, s, i)
        for n in NETWORKS
        for d in DEFENSES
        for s in (0, 1)
        for i in range(30)
    ]


def test_ids_are_a_bijection_that_names_no_model():
    grid = _grid()
    ids = [row[0] for row in grid]
    assert len(set(ids)) == len(grid)  # one id per (network, defense, seed, index)
    assert all(re.fullmatch(r"img-[0-9a-f]{16}", i) for i in ids)
    names = [n.lower() for n in NETWORKS] + [w.lower() for d, label in DEFENSES.items() for w in (d, label)]
    assert not [(i, name) for i in ids for name in names if name in i.lower()]
    assert [row[0] for row in _grid()] == ids  # stable under the same secret: a results file matches the key


def test_ids_cannot_be_recomputed_without_the_secret():
    """Whoever knows the public facts (network, defense, seed, index) and the code, but not the secret, cannot map an
    id back to its defense: neither an unkeyed hash of the parts nor another secret reproduces any id."""
    grid = _grid()
    ids = {row[0] for row in grid}
    for _, *parts in grid:
        text = "/".join(map(str, parts)).encode()
        for algorithm in ("md5", "sha1", "sha256"):
            assert "img-" + hashlib.new(algorithm, text).hexdigest()[:16] not in ids
    assert ids.isdisjoint(row[0] for row in _grid(bytes(range(1, 17))))


def test_the_same_image_under_two_defenses_gets_unrelated_ids():
    """Ids sorted alphabetically do not cluster by defense (a defense-derived prefix or suffix would give 4 switches
    between defenses over the sorted list; unrelated ids switch at about 4 of every 5 neighbours)."""
    grid = sorted(_grid())
    switches = sum(a[2] != b[2] for a, b in zip(grid, grid[1:]))
    assert switches > 0.6 * len(grid)
    same_image = {}
    for image_id, network, _defense, seed, index in grid:
        same_image.setdefault((network, seed, index), []).append(image_id)
    for group in same_image.values():  # the five defenses' ids of one image share no more than chance does
        assert (
            len(group) == 5
            and max(len(os.path.commonprefix([a, b])) for a in group for b in group if a != b) < len("img-") + 4
        )


def test_study_secret_is_drawn_once_kept_and_checked(tmp_path):
    from advlib.human import SECRET_FILE, anonymous_id, study_secret

    secret = study_secret(tmp_path / "kit")
    assert len(secret) == 16 and (tmp_path / "kit" / SECRET_FILE).read_text().strip() == secret.hex()
    assert study_secret(tmp_path / "kit") == secret  # reruns reuse it
    assert study_secret(tmp_path / "other") != secret  # a new kit draws its own
    (tmp_path / "kit" / SECRET_FILE).write_text("not hex")
    with pytest.raises(ValueError, match="hex digits"):
        study_secret(tmp_path / "kit")
    (tmp_path / "kit" / SECRET_FILE).write_text("abcd")
    with pytest.raises(ValueError, match="2 bytes"):
        study_secret(tmp_path / "kit")
    with pytest.raises(ValueError, match="length >= 16"):
        anonymous_id(b"short", "lenet5", "critic", 0, 0)
    with pytest.raises(ValueError, match="got str"):
        anonymous_id("a string secret of some length", "lenet5", "critic", 0, 0)
