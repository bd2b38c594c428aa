"""The offline annotation page of the human study (annotate.html): numbered items from local images, pixelated
upscaling, answers saved as a CSV that Table 2 imports; driven in headless Chromium (Debian's `chromium` package)
over the DevTools protocol where that browser is installed, and `advlib study import` storing the saved answers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pandas as pd
import pytest
import torch

from advlib import cli
from advlib.human import StudyItem, import_results, label_table, make_assignments, write_annotation_page, write_images

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _kit(folder, n=7, per_assignment=4):
    items = [StudyItem(f"img-{i:04d}", "critic", "lenet5", i % 10, (i + 1) % 10, 0.9) for i in range(n)]
    write_images(torch.rand(n, 1, 28, 28), [i.image_id for i in items], folder / "images")
    assignments = make_assignments(items, per_assignment, seed=0)
    return items, assignments, write_annotation_page(assignments, folder)


def test_page_lists_every_assignment_with_local_images_and_pixelated_upscaling(tmp_path):
    items, assignments, page = _kit(tmp_path)
    html = page.read_text()
    listing = json.loads(html.split("const ASSIGNMENTS = ", 1)[1].split(";\n", 1)[0])
    assert listing == [{"number": n, "images": [i.image_id for i in a]} for n, a in enumerate(assignments, 1)]
    assert "image-rendering: pixelated" in html and "src=\"images/' + id + '.png\"" in html
    assert "http" not in html.replace("http-equiv", "")  # offline: nothing is fetched from the network
    assert all((tmp_path / "images" / f"{i.image_id}.png").is_file() for i in items)


class _Browser:
    """Headless Chromium on a page, evaluated over the DevTools protocol (websocket-client, a Jupyter dependency)."""

    def __init__(self, url, profile_dir):
        import websocket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={profile_dir}",
                "--no-first-run",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target = None
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as response:
                    pages = [t for t in json.load(response) if t["type"] == "page" and t["url"].startswith("file:")]
                if pages:
                    target = pages[0]
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert target, "Chromium did not open the page"
        self.socket = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.calls = 0

    def eval(self, expression):
        self.calls += 1
        self.socket.send(
            json.dumps(
                {
                    "id": self.calls,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True, "awaitPromise": True},
                }
            )
        )
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self.calls:
                result = reply["result"]
                assert "exceptionDetails" not in result, result
                return result["result"].get("value")

    def close(self):
        self.socket.close()
        self.process.kill()
        self.process.wait()


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian package 'chromium')")
def test_a_person_labels_the_page_in_chromium_and_table2_imports_the_csv(tmp_path):
    items, assignments, page = _kit(tmp_path / "kit")
    browser = _Browser(page.as_uri(), tmp_path / "chromium-profile")
    try:
        for _ in range(100):
            if browser.eval(
                "document.readyState === 'complete' && document.images.length > 0 && "
                "[...document.images].every(i => i.complete)"
            ):
                break
            time.sleep(0.1)
        shown = browser.eval("""[...document.querySelectorAll('section')].map(s => ({
            heading: s.querySelector('h2').textContent,
            numbers: [...s.querySelectorAll('figcaption')].map(c => c.textContent),
            widths: [...s.querySelectorAll('img')].map(i => i.naturalWidth),
            drawn: [...s.querySelectorAll('img')].map(i => i.clientWidth),
            rendering: [...s.querySelectorAll('img')].map(i => getComputedStyle(i).imageRendering)}))""")
        assert [s["heading"] for s in shown] == [f"Assignment {n}" for n in range(1, len(assignments) + 1)]
        assert [s["numbers"] for s in shown] == [[str(k) for k in range(1, len(a) + 1)] for a in assignments]
        assert all(w == 28 for s in shown for w in s["widths"])  # every local image loaded
        assert all(d == 112 for s in shown for d in s["drawn"])  # shown 4x
        assert {r for s in shown for r in s["rendering"]} == {"pixelated"}
        # the person answers the first assignment fully and the second in part; the third stays empty
        answers = {(1, k): (3 * k) % 10 for k in range(1, len(assignments[0]) + 1)} | {(2, 1): 7}
        for (number, k), label in answers.items():
            browser.eval(f"""(() => {{ const box = document.querySelectorAll('section')[{number - 1}]
                .querySelectorAll('input.label')[{k - 1}]; box.value = '{label}';
                box.dispatchEvent(new Event('input')); }})()""")
        csv_text = browser.eval("answersCsv('annotator-1')")
    finally:
        browser.close()
    saved = tmp_path / "answers.csv"
    saved.write_text(csv_text)
    imported = import_results(saved)
    expected = [("annotator-1", assignments[n - 1][k - 1].image_id, label) for (n, k), label in answers.items()]
    assert sorted(imported.itertuples(index=False, name=None)) == sorted(expected)
    table = label_table(imported, pd.DataFrame([vars(i) for i in items]))
    assert table.index.tolist() == [("critic", "lenet5")]


def test_study_import_stores_a_copy_for_table2_and_rejects_other_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADVLIB_DATA", str(tmp_path / "data"))
    answers = tmp_path / "elsewhere" / "answers.csv"
    answers.parent.mkdir()
    answers.write_text(
        "WorkerId,AssignmentId,Input.image_1_id,Input.image_2_id,Answer.label_1,Answer.label_2\n"
        "w1,1,img-a,img-b,3,\nw2,1,img-a,img-b,4,5\n"
    )
    assert cli.main(["study", "import", str(answers), "--profile", "ci"]) == 0
    out = capsys.readouterr().out
    stored = list((tmp_path / "data" / "human_study").glob("answers-*.csv"))
    assert len(stored) == 1 and stored[0].read_bytes() == answers.read_bytes()
    assert "stored 3 answers of 2 annotator(s)" in out and f"--set study.results={stored[0]}" in out
    from advlib import params

    assert params.load("adversary_critic", "ci", {"study.results": str(stored[0])}).study.results == str(stored[0])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert cli.main(["study", "import", str(tmp_path / "other.csv")]) == 2
    assert "no Input.image_k_id columns" in capsys.readouterr().err
    assert len(list((tmp_path / "data" / "human_study").iterdir())) == 1  # nothing stored for the bad file
