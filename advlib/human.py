"""An MTurk-style human-study kit (Adversary Critic, Table 2): assignments of adversarial images, a batch CSV with a
HIT template for upload, and the import and analysis of the workers' answers.

Native: the study's bookkeeping is specific to the paper. Images are written as PNG files; the batch CSV has one row
per assignment with `image_k_id` and `image_k_url` columns, which the HIT template reads as ${image_k_url}; MTurk's
results CSV repeats them as `Input.image_k_id` and adds the answers as `Answer.label_k`.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import random
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

HIT_TEMPLATE = """<!-- advlib human study: one HIT = {n} images; write the digit you see under each -->
<crowd-form answer-format="flatten-objects">
  <p>Which digit (0-9) does each image show? If none, answer your best guess.</p>
{rows}
</crowd-form>
<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
"""
HIT_ROW = """  <div><img src="${{image_{k}_url}}" width="112" height="112"/>
    <crowd-input name="label_{k}" type="number" min="0" max="9" required></crowd-input></div>"""


@dataclass(frozen=True)
class StudyItem:
    """One adversarial image of the study: who made it, its original label and the label the attack aimed at."""

    image_id: str
    defense: str
    network: str
    original: int
    target: int
    confidence: float


SECRET_FILE = "id_secret.txt"
SECRET_BYTES = 16


def study_secret(folder: Path) -> bytes:
    """The kit's id key: read from `folder`/id_secret.txt, or drawn at random and written there on the first run.

    It keeps a kit's ids stable across reruns (so a results file matches the key) while nobody without the file can
    recompute an id from the public facts (network, defense, seed, index). It is never uploaded (only images/ is)."""
    path = Path(folder) / SECRET_FILE
    if path.is_file():
        text = path.read_text().strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{path}: expected {2 * SECRET_BYTES} hex digits, got {text[:40]!r}") from None
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"{path}: the secret has {len(secret)} bytes; it needs at least {SECRET_BYTES}")
        return secret
    secret = secrets.token_bytes(SECRET_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SECRET_FILE}.tmp")
    tmp.write_text(secret.hex() + "\n")
    tmp.replace(path)
    return secret


def anonymous_id(secret: bytes, *parts: object) -> str:
    """A short id, keyed by the kit's `secret` (HMAC-SHA256), that reveals nothing about which model made the image:
    annotators see file names in URLs, and without the key the id cannot be recomputed from (network, defense, ...)."""
    if not isinstance(secret, bytes) or len(secret) < SECRET_BYTES:
        raise ValueError(f"secret must be bytes of length >= {SECRET_BYTES} (see study_secret); got {type(secret).__name__} "
                         f"of length {len(secret) if isinstance(secret, (bytes, str)) else 'n/a'}")
    if not parts:
        raise ValueError("anonymous_id needs the parts that identify the image, e.g. (network, defense, seed, index)")
    digest = hmac.new(secret, "/".join(map(str, parts)).encode(), hashlib.sha256).hexdigest()
    return "img-" + digest[:16]


def make_assignments(items: Sequence[StudyItem], per_assignment: int = 25, seed: int = 0) -> list[list[StudyItem]]:
    """Shuffle the items (seeded) and cut them into assignments of `per_assignment` images (the last may be short)."""
    if per_assignment < 1:
        raise ValueError(f"per_assignment must be >= 1; got per_assignment={per_assignment}")
    ids = [item.image_id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    order = list(items)
    random.Random(seed).shuffle(order)
    return [order[i:i + per_assignment] for i in range(0, len(order), per_assignment)]


def write_images(images: Tensor, ids: Sequence[str], folder: Path) -> list[Path]:
    """Each image (C, H, W) in [0, 1] as <id>.png in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, image_id in zip(images.detach().cpu(), ids):
        array = (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        array = array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))
        path = folder / f"{image_id}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def write_sheet(images: Tensor, path: Path, columns: int = 5, scale: int = 3) -> Path:
    """One assignment as a numbered grid sheet (PNG): image k of the assignment under the number k, enlarged
    `scale` times, for annotators working from a printout or a single page."""
    if len(images) == 0:
        raise ValueError("an assignment sheet needs at least one image")
    array = (images.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    height, width = array.shape[2] * scale, array.shape[3] * scale
    pad, label = 6, 14
    rows = -(-len(array) // columns)
    sheet = Image.new("L" if array.shape[1] == 1 else "RGB", (columns * (width + pad) + pad, rows * (height + label + pad) + pad), 255)
    draw = ImageDraw.Draw(sheet)
    for k, image in enumerate(array):
        tile = Image.fromarray(image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0)))
        row, col = divmod(k, columns)
        left, top = pad + col * (width + pad), pad + row * (height + label + pad)
        draw.text((left, top), str(k + 1), fill=0)
        sheet.paste(tile.resize((width, height), Image.NEAREST), (left, top + label))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def export_batch(assignments: Sequence[Sequence[StudyItem]], folder: Path, url_prefix: str) -> dict[str, Path]:
    """Write batch.csv (one row per assignment: assignment, image_k_id, image_k_url), hit.html (the template)
    and items.csv (the key: every item with its labels) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    width = max(len(a) for a in assignments)
    header = ["assignment"] + [f"image_{k}_{field}" for k in range(1, width + 1) for field in ("id", "url")]
    with open(folder / "batch.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for number, assignment in enumerate(assignments, 1):
            cells = [str(number)]
            for k in range(width):
                item = assignment[k] if k < len(assignment) else None
                cells += [item.image_id, f"{url_prefix.rstrip('/')}/{item.image_id}.png"] if item else ["", ""]
            writer.writerow(cells)
    rows = "\n".join(HIT_ROW.format(k=k) for k in range(1, width + 1))
    (folder / "hit.html").write_text(HIT_TEMPLATE.format(n=width, rows=rows))
    pd.DataFrame([asdict(i) for a in assignments for i in a]).to_csv(folder / "items.csv", index=False)
    return {"batch": folder / "batch.csv", "hit": folder / "hit.html", "items": folder / "items.csv"}


def import_results(path: Path) -> pd.DataFrame:
    """MTurk's results CSV (or one written like it) as long format: worker, image_id, label."""
    raw = pd.read_csv(path, dtype=str).fillna("")
    ks = sorted(int(c.split("_")[1]) for c in raw.columns if c.startswith("Input.image_") and c.endswith("_id"))
    if not ks:
        raise ValueError(f"{path}: no Input.image_k_id columns; is this an MTurk results file of an advlib batch?")
    rows = []
    for _, row in raw.iterrows():
        for k in ks:
            image_id, answer = row[f"Input.image_{k}_id"], row.get(f"Answer.label_{k}", "")
            if image_id and answer != "":
                rows.append({"worker": row.get("WorkerId", ""), "image_id": image_id, "label": int(answer)})
    return pd.DataFrame(rows, columns=["worker", "image_id", "label"])


def label_table(answers: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Table 2: per defense and network, % of answers naming the adversarial target and % naming the original label."""
    merged = answers.merge(items, on="image_id", how="inner")
    if merged.empty:
        raise ValueError("no answer refers to a known image id")
    merged["as_target"] = merged["label"] == merged["target"]
    merged["as_original"] = merged["label"] == merged["original"]
    table = merged.groupby(["defense", "network"], sort=False)[["as_target", "as_original"]].mean() * 100
    return table.rename(columns={"as_target": "target_percent", "as_original": "original_percent"})


def proxy_answers(annotator: nn.Module, images: Tensor, ids: Sequence[str], batch_size: int = 500) -> pd.DataFrame:
    """The proxy annotator's labels (its argmax) in import_results' format, worker 'proxy'; for runs without humans."""
    if len(images) != len(ids):
        raise ValueError(f"{len(images)} images but {len(ids)} ids")
    device = next(annotator.parameters()).device
    with torch.no_grad():
        labels = torch.cat([annotator(images[i:i + batch_size].to(device)).argmax(1).cpu()
                            for i in range(0, len(images), batch_size)]) if len(images) else torch.zeros(0, dtype=torch.long)
    return pd.DataFrame({"worker": "proxy", "image_id": list(ids), "label": labels.tolist()}, columns=["worker", "image_id", "label"])
