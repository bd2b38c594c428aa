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
import json
import random
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from .files import atomic_write, atomic_write_text

HIT_TEMPLATE = """<!-- advlib human study: one HIT = {n} images; write the digit you see under each -->
<crowd-form answer-format="flatten-objects">
  <p>Which digit (0-9) does each image show? If none, answer your best guess.</p>
{rows}
</crowd-form>
<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
"""
HIT_ROW = """  <div><img src="${{image_{k}_url}}" width="112" height="112"/>
    <crowd-input name="label_{k}" type="number" min="0" max="9" required></crowd-input></div>"""


# The offline annotation page: every assignment with its images numbered as on its sheet, drawn 4x with pixelated
# upscaling (no smoothing that would invent strokes). The answers are kept in the browser's localStorage while a
# person works and saved as a CSV in MTurk's results format, so `import_results` (Table 2) reads it unchanged.
ANNOTATION_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>advlib human study: which digit is it?</title>
<style>
 body {{ font-family: sans-serif; margin: 1.5em; }}
 section {{ margin-bottom: 2em; }}
 .items {{ display: grid; grid-template-columns: repeat(5, 8em); gap: 1em; }}
 figure {{ margin: 0; text-align: center; }}
 figcaption {{ font-weight: bold; }}
 img {{ width: 112px; height: 112px; image-rendering: pixelated; border: 1px solid #999; }}
 input.label {{ width: 3em; font-size: 1.2em; text-align: center; }}
</style></head>
<body>
<h1>Which digit (0-9) does each image show?</h1>
<p>Type the digit you see under each numbered image; if you see none, give your best guess. Your answers are kept in
this browser until you save them. <b>Save answers</b> downloads <code>answers.csv</code>: pass it to
<code>advlib study import answers.csv</code>, which stores it for Table 2.</p>
<p><label>Your name or id: <input id="worker" required></label>
 <button id="save" type="button" onclick="saveAnswers()">Save answers</button> <span id="status"></span></p>
<div id="assignments"></div>
<script>
const ASSIGNMENTS = {assignments};
const STORE = "advlib-study-" + {kit_id};
function stored() {{ return JSON.parse(localStorage.getItem(STORE) || "{{}}"); }}
function remember(event) {{
  const all = stored(); all[event.target.dataset.key] = event.target.value; localStorage.setItem(STORE, JSON.stringify(all));
}}
function render() {{
  const all = stored(), root = document.getElementById("assignments");
  for (const assignment of ASSIGNMENTS) {{
    const section = document.createElement("section");
    section.innerHTML = "<h2>Assignment " + assignment.number + "</h2>";
    const grid = document.createElement("div"); grid.className = "items";
    assignment.images.forEach((id, k) => {{
      const key = assignment.number + "/" + (k + 1);
      const figure = document.createElement("figure");
      figure.innerHTML = '<figcaption>' + (k + 1) + '</figcaption><img alt="image ' + (k + 1) + '" src="images/' + id + '.png">';
      const input = document.createElement("input");
      Object.assign(input, {{className: "label", type: "number", min: 0, max: 9, value: all[key] ?? ""}});
      input.dataset.key = key; input.addEventListener("input", remember);
      figure.appendChild(input); grid.appendChild(figure);
    }});
    section.appendChild(grid); root.appendChild(section);
  }}
}}
function answersCsv(worker) {{
  const width = Math.max(...ASSIGNMENTS.map(a => a.images.length)), all = stored();
  const header = ["WorkerId", "AssignmentId"];
  for (let k = 1; k <= width; k++) header.push("Input.image_" + k + "_id");
  for (let k = 1; k <= width; k++) header.push("Answer.label_" + k);
  const rows = [header];
  for (const a of ASSIGNMENTS) {{
    const answers = a.images.map((id, k) => String(all[a.number + "/" + (k + 1)] ?? "").trim());
    if (answers.every(x => x === "")) continue;
    const ids = a.images.concat(Array(width - a.images.length).fill(""));
    rows.push([worker, String(a.number), ...ids, ...answers, ...Array(width - answers.length).fill("")]);
  }}
  return rows.map(r => r.map(c => /[",\\n]/.test(c) ? '"' + c.replace(/"/g, '""') + '"' : c).join(",")).join("\\n") + "\\n";
}}
function saveAnswers() {{
  const worker = document.getElementById("worker").value.trim(), status = document.getElementById("status");
  const bad = Object.values(stored()).filter(v => v !== "" && !/^[0-9]$/.test(String(v).trim()));
  if (!worker) {{ status.textContent = "Enter your name or id first."; return; }}
  if (bad.length) {{ status.textContent = "Every answer must be one digit 0-9; fix: " + bad.join(", "); return; }}
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([answersCsv(worker)], {{type: "text/csv"}}));
  link.download = "answers.csv"; link.click();
  status.textContent = "Saved answers.csv.";
}}
render();
</script>
</body></html>
"""


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
    atomic_write_text(path, secret.hex() + "\n")
    return secret


def anonymous_id(secret: bytes, *parts: object) -> str:
    """A short id, keyed by the kit's `secret` (HMAC-SHA256), that reveals nothing about which model made the image:
    annotators see file names in URLs, and without the key the id cannot be recomputed from (network, defense, ...)."""
    if not isinstance(secret, bytes) or len(secret) < SECRET_BYTES:
        raise ValueError(
            f"secret must be bytes of length >= {SECRET_BYTES} (see study_secret); got {type(secret).__name__} "
            f"of length {len(secret) if isinstance(secret, (bytes, str)) else 'n/a'}"
        )
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
    return [order[i : i + per_assignment] for i in range(0, len(order), per_assignment)]


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
    sheet = Image.new(
        "L" if array.shape[1] == 1 else "RGB", (columns * (width + pad) + pad, rows * (height + label + pad) + pad), 255
    )
    draw = ImageDraw.Draw(sheet)
    for k, image in enumerate(array):
        tile = Image.fromarray(image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0)))
        row, col = divmod(k, columns)
        left, top = pad + col * (width + pad), pad + row * (height + label + pad)
        draw.text((left, top), str(k + 1), fill=0)
        sheet.paste(tile.resize((width, height), Image.Resampling.NEAREST), (left, top + label))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def export_batch(assignments: Sequence[Sequence[StudyItem]], folder: Path, url_prefix: str) -> dict[str, Path]:
    """Write batch.csv (one row per assignment: assignment, image_k_id, image_k_url), hit.html (the template)
    and items.csv (the key: every item with its labels) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    width = max(len(a) for a in assignments)
    header = ["assignment"] + [f"image_{k}_{field}" for k in range(1, width + 1) for field in ("id", "url")]
    rows = [header]
    for number, assignment in enumerate(assignments, 1):
        cells = [str(number)]
        for k in range(width):
            item = assignment[k] if k < len(assignment) else None
            cells += [item.image_id, f"{url_prefix.rstrip('/')}/{item.image_id}.png"] if item else ["", ""]
        rows.append(cells)

    def write_batch(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            csv.writer(handle).writerows(rows)

    atomic_write(folder / "batch.csv", write_batch)
    atomic_write_text(
        folder / "hit.html",
        HIT_TEMPLATE.format(n=width, rows="\n".join(HIT_ROW.format(k=k) for k in range(1, width + 1))),
    )
    key = pd.DataFrame([asdict(i) for a in assignments for i in a])
    atomic_write(folder / "items.csv", lambda tmp: key.to_csv(tmp, index=False))
    return {"batch": folder / "batch.csv", "hit": folder / "hit.html", "items": folder / "items.csv"}


def write_annotation_page(assignments: Sequence[Sequence[StudyItem]], folder: Path) -> Path:
    """annotate.html in `folder` (beside images/): the offline page on which a person labels every assignment; its
    saved CSV is in MTurk's results format (see ANNOTATION_PAGE)."""
    listing = [
        {"number": n, "images": [item.image_id for item in assignment]} for n, assignment in enumerate(assignments, 1)
    ]
    kit_id = json.dumps(hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:12])
    path = folder / "annotate.html"
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, ANNOTATION_PAGE.format(assignments=json.dumps(listing), kit_id=kit_id))


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
        labels = (
            torch.cat(
                [
                    annotator(images[i : i + batch_size].to(device)).argmax(1).cpu()
                    for i in range(0, len(images), batch_size)
                ]
            )
            if len(images)
            else torch.zeros(0, dtype=torch.long)
        )
    return pd.DataFrame(
        {"worker": "proxy", "image_id": list(ids), "label": labels.tolist()}, columns=["worker", "image_id", "label"]
    )
