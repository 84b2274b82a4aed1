"""`sac serve`'s HTTP API with FastAPI's TestClient and a tiny random model: every route, bad input, session
isolation, eviction, the token. The editing routes are checked against the library: the same calls on a
:class:`~sac.inference.editor.Editor` built directly give the same label image."""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import time

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import tifffile

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import sac  # noqa: E402
from sac.cli import main as cli_main  # noqa: E402
from sac.data.io import list_pairs, read_image, read_labels  # noqa: E402
from sac.errors import SACError  # noqa: E402
from sac.inference.editor import Editor  # noqa: E402
from sac.web.app import create_app, inference_config  # noqa: E402
from sac.web.settings import MAX_PIXELS, SESSION_HEADER, TOKEN_HEADER, ServeSettings  # noqa: E402

READY_TIMEOUT = 120


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from sac.backbones import build_sac
    from sac.modelfile import save_model
    from sac.models.config import SACConfig, UNetConfig

    folder = tmp_path_factory.mktemp("run") / "best"
    cfg = SACConfig(backbone="vit_tiny", unet=UNetConfig(channels=(8, 16, 32, 64), num_res_units=0))
    save_model(folder, build_sac(cfg, pretrained=False), extra={"note": "test"})
    return sac.load_model(str(folder)), str(folder)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return skimage.data.immunohistochemistry()[:200, :180]


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    iio.imwrite(buf, image, extension=".png")
    return buf.getvalue()


def make_client(model, **kw) -> TestClient:
    loaded, folder = model
    kw.setdefault("engine", "torch")  # no graph export / compilation for a throw-away random model
    app = create_app(ServeSettings(model=folder, **kw), model=loaded)
    return TestClient(app)


def wait_ready(client, status=("ready",), headers=None) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        st = client.get("/api/state", headers=headers).json()
        if st["status"] not in ("queued", "running"):
            assert st["status"] in status, st
            return st
        time.sleep(0.05)
    raise AssertionError("segmentation did not finish")


def upload(client, data: bytes, name="crop.png", **kw):
    return client.post(f"/api/open/upload?name={name}", content=data, **kw)


def opened(client, image, name="crop.png") -> dict:
    r = upload(client, png(image), name)
    assert r.status_code == 200, r.text
    return wait_ready(client)


def library_editor(model, image) -> Editor:
    loaded, _ = model
    return Editor.from_segmenter(loaded.segmenter(inference_config(ServeSettings(engine="torch"))), image)


def apply_delta(held: dict, delta: dict) -> None:
    for i in delta["removed"]:
        held.pop(str(i), None)
    held.update(delta["nuclei"])


def server_labels(client) -> np.ndarray:
    r = client.get("/api/export/labels")
    assert r.status_code == 200
    return tifffile.imread(io.BytesIO(r.content)).astype(np.int32)


def nucleus_centre(client) -> tuple[float, float, int]:
    """(x, y, id) of the innermost pixel of the largest nucleus (from the page's polygons + the label export)."""
    from scipy import ndimage as ndi

    labels = server_labels(client)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    assert len(ids), "the tiny model found no nucleus on the crop"
    k = int(ids[np.argmax(counts)])
    dist = ndi.distance_transform_edt(labels == k)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y), k


# ---------------------------------------------------------------------------------------------------------- page
def test_page_static_files_and_info(tiny_model):
    with make_client(tiny_model) as c:
        page = c.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text and "Ctrl+Z" in page.text
        for name in ("app.js", "view.js", "style.css", "index.html"):
            assert c.get(f"/static/{name}").status_code == 200, name
        for name in ("index.html", "app.js", "view.js", "style.css"):  # works offline: nothing from a CDN
            text = c.get(f"/static/{name}").text
            assert "//cdn" not in text and "https://" not in text and "http://" not in text, name
        info = c.get("/api/info").json()
        assert info["max_pixels"] == MAX_PIXELS and info["library"] is False and info["can_save"] is False
        assert "labels" in info["formats"] and "geojson" in info["formats"]
        assert c.get("/api/state").json()["status"] == "empty"
        assert c.get("/api/library").json() == {"items": []}
        assert c.get("/static/../app.py").status_code == 404
        assert c.get("/static/%2e%2e/app.py").status_code == 404


# ---------------------------------------------------------------------------------------------------------- flow
def test_upload_segment_edit_like_the_library(tiny_model, crop):
    """Each route is one Editor call: the same calls on a library Editor give the same labels, and the outlines the
    page holds (initial payload + deltas) always equal a fresh full payload."""
    lib = library_editor(tiny_model, crop)
    with make_client(tiny_model) as c:
        st = opened(c, crop)
        assert (st["width"], st["height"]) == (180, 200) and st["done"] == st["total"] > 0
        assert st["n_nuclei"] == lib.n_nuclei == lib.result().n_nuclei
        np.testing.assert_array_equal(iio.imread(io.BytesIO(c.get("/api/image").content)), crop)
        held = c.get("/api/contours").json()
        assert len(held["nuclei"]) == held["n_nuclei"] == st["n_nuclei"]
        held = held["nuclei"]
        x, y, k = nucleus_centre(c)
        calls = [
            ("remove", {"x": x, "y": y}, ("remove", x, y)),
            ("undo", None, ("undo",)),
            ("redo", None, ("redo",)),
            ("undo", None, ("undo",)),
            ("add", {"x": 40.0, "y": 50.0}, ("add", 40.0, 50.0)),
            ("box", {"x0": 100, "y0": 120, "x1": 130, "y1": 150}, ("box", 100, 120, 130, 150)),
            ("remove", {"x": 0, "y": 0}, ("remove", 0, 0)),
        ]
        for route, body, call in calls:
            r = c.post(f"/api/{route}", json=body) if body is not None else c.post(f"/api/{route}")
            assert r.status_code == 200, (route, r.text)
            edit = getattr(lib, call[0])(*call[1:])
            out = r.json()
            assert (out["changed"], out["message"], out["n_nuclei"]) == (edit.changed, edit.message, edit.n_nuclei)
            apply_delta(held, out["contours"])
            fresh = c.get("/api/contours").json()
            assert held == fresh["nuclei"] and len(held) == out["n_nuclei"], route
            np.testing.assert_array_equal(server_labels(c), lib.result().labels)
        ids = sorted(int(i) for i in held)
        assert len(ids) >= 2, "need two nuclei for merge"
        for route, body, call in [
            ("merge", {"ids": ids[:2]}, ("merge", ids[:2])),
            ("delete", {"id": ids[-1]}, ("delete", ids[-1])),
        ]:
            out = c.post(f"/api/{route}", json=body).json()
            edit = getattr(lib, call[0])(*call[1:])
            assert (out["changed"], out["n_nuclei"], out["ids"]) == (edit.changed, edit.n_nuclei, edit.ids)
            apply_delta(held, out["contours"])
            assert held == c.get("/api/contours").json()["nuclei"]
        np.testing.assert_array_equal(server_labels(c), lib.result().labels)
        # the page's ids are the editor's (stable while editing): split the largest nucleus at its two extreme pixels
        assert {int(i) for i in held} == set(np.unique(lib.labels).tolist()) - {0}
        sid = max(held, key=lambda i: held[i]["area"])
        ys, xs = np.nonzero(lib.labels == int(sid))
        pts = [[float(xs[0]), float(ys[0])], [float(xs[-1]), float(ys[-1])]]
        r = c.post("/api/split", json={"id": int(sid), "points": pts})
        try:
            edit = lib.split(int(sid), pts)
        except SACError as exc:
            assert r.status_code == 400 and r.json()["detail"] == str(exc)
        else:
            assert r.status_code == 200 and r.json()["n_nuclei"] == edit.n_nuclei
            apply_delta(held, r.json()["contours"])
            assert held == c.get("/api/contours").json()["nuclei"]
        np.testing.assert_array_equal(server_labels(c), lib.result().labels)


def test_outline_deltas_follow_any_label_change():
    """Contours.update (what the page receives after an edit) keeps the held outlines equal to a fresh computation,
    whatever changed: a nucleus erased, two merged, one painted over others, one grown, an id renumbered."""
    from skimage.measure import label

    from sac.web.contours import Contours

    rng = np.random.default_rng(0)
    labels = label(skimage.data.binary_blobs(160, blob_size_fraction=0.06, volume_fraction=0.3, rng=1)).astype(
        np.int32)
    shown = Contours(labels)
    held = {k: v for k, v in shown.payload()["nuclei"].items()}
    assert len(held) == labels.max() > 10
    for step in range(12):
        labels = labels.copy()
        ids = np.unique(labels[labels > 0])
        a, b = (int(i) for i in rng.choice(ids, 2, replace=False))
        kind = step % 5
        if kind == 0:
            labels[labels == a] = 0
        elif kind == 1:
            labels[labels == b] = a
        elif kind == 2:
            y, x = rng.integers(10, 150, 2)
            labels[y - 8 : y + 8, x - 8 : x + 8] = labels.max() + 1
        elif kind == 3:
            from scipy import ndimage as ndi

            labels[ndi.binary_dilation(labels == a, iterations=2) & (labels == 0)] = a
        else:
            labels[labels == a] = labels.max() + 7
        delta = shown.update(labels)
        assert delta["version"] == step + 1
        apply_delta(held, delta)
        assert held == Contours(labels).payload()["nuclei"], kind
    assert shown.update(labels) == {"version": 12, "removed": [], "nuclei": {}}  # nothing changed: nothing sent


def test_exports_are_the_segment_writers(tiny_model, crop, tmp_path):
    from sac.inference.writers import FORMATS, SUFFIX, write_outputs

    lib = library_editor(tiny_model, crop)
    write_outputs(lib.result(), tmp_path, "crop", FORMATS)
    with make_client(tiny_model) as c:
        opened(c, crop, "crop.png")
        for fmt in FORMATS:
            r = c.get(f"/api/export/{fmt}")
            assert r.status_code == 200, fmt
            assert f'filename="crop{SUFFIX[fmt]}"' in r.headers["content-disposition"]
            assert r.content == (tmp_path / f"crop{SUFFIX[fmt]}").read_bytes(), fmt
        gj = json.loads(c.get("/api/export/geojson").content)
        assert gj["type"] == "FeatureCollection" and len(gj["features"]) == lib.n_nuclei
        assert c.get("/api/export/pdf").status_code == 404
        assert c.get("/api/export/..%2f..%2fetc").status_code == 404


def test_save_as_training_example(tiny_model, crop, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with make_client(tiny_model, data_dir=data) as c:
        assert c.get("/api/info").json()["can_save"] is True
        assert c.post("/api/save-example", json={"split": "train"}).status_code == 409  # nothing open
        opened(c, crop, "my crop.png")
        x, y, _ = nucleus_centre(c)
        assert c.post("/api/remove", json={"x": x, "y": y}).json()["changed"]
        r = c.post("/api/save-example", json={"split": "train"})
        assert r.status_code == 200, r.text
        out = r.json()
        root = data / "sac-corrections"
        assert out["pairs_in_split"] == 1 and "save one example to the split 'val'" in out["train_hint"]
        (pid, img, lab), = list_pairs(root, "train")
        assert pid.startswith("my_crop-")
        np.testing.assert_array_equal(read_image(img), crop)
        np.testing.assert_array_equal(read_labels(lab) > 0, server_labels(c) > 0)
        assert len(np.unique(read_labels(lab))) == len(np.unique(server_labels(c)))
        again = c.post("/api/save-example", json={"split": "train"}).json()  # same image: replaced, not added
        assert again["pairs_in_split"] == 1
        val = c.post("/api/save-example", json={"split": "val"}).json()
        assert val["pairs_in_split"] == 1 and val["image"].startswith("val/images/")
        hint = c.post("/api/save-example", json={"split": "train"}).json()["train_hint"]
        assert hint.startswith("sac train --init-from ") and "--mask-prompt --distance-head" in hint
        assert hint.endswith(f"--data {root.resolve()} --split train --out RUN_DIR")
        for bad in ("../x", "a/b", "", "x" * 65, "tr ain", "..", "/etc"):
            assert c.post("/api/save-example", json={"split": bad}).status_code == 400, bad
        assert c.post("/api/save-example", json={"split": 3}).status_code == 422
        assert sorted(p.name for p in root.iterdir()) == ["train", "val"]
        # the saved examples are not offered as images to open
        assert c.get("/api/library").json()["items"] == []
        from sac.data.dataset import CropDataset

        item = CropDataset(root, "train", crop_size=64, augment=False, length=1)[0]
        assert item["image"].shape == (3, 64, 64)
    with make_client(tiny_model) as c:  # no --data-dir / --train-dir: saving is off, with a message
        opened(c, crop)
        r = c.post("/api/save-example", json={"split": "train"})
        assert r.status_code == 400 and "--train-dir" in r.json()["detail"]


# ---------------------------------------------------------------------------------------------------------- bad input
def test_bad_uploads_are_refused_and_nothing_is_kept(tiny_model, crop):
    before = set(os.listdir(tempfile.gettempdir()))
    with make_client(tiny_model, max_upload_mb=0.05) as c:
        cases = [
            (b"hello, this is not an image", 415, "not a PNG"),
            (b"", 400, "empty"),
            (png(crop)[:200], 400, "cannot read crop"),  # a truncated PNG (named by its stem, not a server path)
            (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, 400, "crop"),
            (b"BM" + b"\0" * 60_000, 413, "larger than"),
        ]
        for data, status, words in cases:
            r = upload(c, data)
            assert r.status_code == status, (data[:10], r.text)
            assert words in r.json()["detail"]
        assert c.get("/api/state").json()["status"] == "empty"
        r = c.post("/api/open/upload", content=b"x" * 100_000, headers={"content-length": "100000"})
        assert r.status_code == 413
    with make_client(tiny_model) as c:
        big = np.zeros((5001, 5000), np.uint8)  # 25.005 MP, a few KB as PNG
        r = upload(c, png(big), "huge.png")
        assert r.status_code == 413 and "megapixels" in r.json()["detail"]
        grey16 = (crop[..., 0].astype(np.uint16) * 200)
        buf = io.BytesIO()
        tifffile.imwrite(buf, grey16)
        r = upload(c, buf.getvalue(), "grey.tif")  # TIFF, 16-bit: read as `sac segment` reads it
        assert r.status_code == 200, r.text
        wait_ready(c)
        from sac.data.io import to_uint8

        shown = iio.imread(io.BytesIO(c.get("/api/image").content))
        np.testing.assert_array_equal(shown[..., 0], to_uint8(grey16))
    leftovers = {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("sac-")}
    assert not leftovers


def test_bad_edits_are_4xx_and_change_nothing(tiny_model, crop):
    with make_client(tiny_model) as c:
        assert c.post("/api/add", json={"x": 1, "y": 1}).status_code == 409  # nothing open
        assert c.get("/api/contours").status_code == 409
        assert c.get("/api/export/labels").status_code == 409
        assert c.get("/api/image").status_code == 409
        opened(c, crop)
        labels = server_labels(c)
        bad = [
            ("add", {"x": 500, "y": 5}, 400, "outside"),
            ("add", {"x": -1, "y": 5}, 400, "outside"),
            ("add", {"x": "abc", "y": 5}, 422, None),
            ("add", {"x": 5}, 422, None),
            ("box", {"x0": 10, "y0": 10, "x1": 10, "y1": 40}, 400, "zero area"),
            ("delete", {"id": 99999}, 400, "no instance"),
            ("merge", {"ids": []}, 400, "empty"),
            ("split", {"id": 99999, "points": [[1, 1], [2, 2]]}, 400, "no instance"),
            ("refine", {"id": 99999, "points": []}, 400, None),
            ("delete", {"id": "x"}, 422, None),
        ]
        for route, body, status, words in bad:
            r = c.post(f"/api/{route}", json=body)
            assert r.status_code == status, (route, body, r.text)
            if words:
                assert words in r.json()["detail"], r.json()
        r = c.post("/api/remove", content=b'{"x": NaN, "y": 5}', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "finite" in r.json()["detail"]
        r = c.post("/api/add", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        np.testing.assert_array_equal(server_labels(c), labels)
        assert c.get("/api/state").json()["version"] == 0


def test_a_click_during_the_segmentation_is_refused(tiny_model, crop):
    gate = threading.Event()
    with make_client(tiny_model) as c:
        store = c.app.state.store
        inner = store.make_editor

        ticks = []

        def held(image, on_tile):  # the worker waits until the test lets it go; progress calls are counted
            gate.wait(READY_TIMEOUT)

            def counted(n):
                ticks.append(image[0, 0].tolist())
                on_tile(n)

            return inner(image, counted)

        store.make_editor = held
        assert upload(c, png(crop)).status_code == 200
        for _ in range(100):
            if c.get("/api/state").json()["status"] == "running":
                break
            time.sleep(0.02)
        r = c.post("/api/add", json={"x": 10, "y": 10})
        assert r.status_code == 409 and "still running" in r.json()["detail"]
        assert c.get("/api/contours").status_code == 409
        assert c.get("/api/image").status_code == 200  # the image itself is shown at once
        # another image opened meanwhile: the first run stops at its next tile, the second one is what is shown
        other = np.ascontiguousarray(crop[::-1, ::-1])
        assert upload(c, png(other), "second.png").status_code == 200
        gate.set()
        st = wait_ready(c)
        assert st["name"] == "second" and st["done"] == st["total"] > 1
        assert ticks.count(crop[0, 0].tolist()) == 1  # the first run stopped after its first tile
        np.testing.assert_array_equal(iio.imread(io.BytesIO(c.get("/api/image").content)), other)
        assert c.post("/api/add", json={"x": 10, "y": 10}).status_code == 200


# ---------------------------------------------------------------------------------------------------------- sessions
def test_two_sessions_never_see_each_others_images(tiny_model, crop):
    other = np.ascontiguousarray(crop[::-1])
    with make_client(tiny_model) as a:
        b = TestClient(a.app)
        opened(a, crop, "a.png")
        assert b.get("/api/image").status_code == 409
        assert b.get("/api/state").json()["status"] == "empty"
        assert b.get("/api/export/labels").status_code == 409
        r = b.post("/api/open/upload?name=b.png", content=png(other))
        assert r.status_code == 200
        wait_ready(b)
        np.testing.assert_array_equal(iio.imread(io.BytesIO(a.get("/api/image").content)), crop)
        np.testing.assert_array_equal(iio.imread(io.BytesIO(b.get("/api/image").content)), other)
        assert a.get("/api/state").json()["name"] == "a" and b.get("/api/state").json()["name"] == "b"
        # a script may name its session by header instead of the cookie
        sid = r.headers[SESSION_HEADER]
        script = TestClient(a.app)
        assert script.get("/api/state", headers={SESSION_HEADER: sid}).json()["name"] == "b"
        assert script.get("/api/state", headers={SESSION_HEADER: "x" * 30}).json()["status"] == "empty"


def test_least_recently_used_sessions_are_evicted(tiny_model, crop):
    with make_client(tiny_model) as a:
        store = a.app.state.store
        b, c3 = TestClient(a.app), TestClient(a.app)
        opened(a, crop, "a.png")
        size = store.total_bytes()
        assert size > crop.nbytes + 4 * 8 * 8 * 256 * 2  # image, label copies, maps, the embeddings (>= 4 tiles)
        store.budget = int(1.5 * size)
        opened(b, crop, "b.png")  # a + b are above the budget: a (least recently used) goes
        r = a.get("/api/state")
        assert r.status_code == 410 and "open the image again" in r.json()["detail"]
        assert a.post("/api/add", json={"x": 5, "y": 5}).status_code == 410
        assert a.get("/api/image").status_code == 410
        assert b.get("/api/state").json()["status"] == "ready"
        opened(a, crop, "a2.png")  # a comes back; now b is the oldest
        assert a.get("/api/state").json()["name"] == "a2"
        assert b.get("/api/state").status_code == 410
        assert a.app.state.store.total_bytes() <= 1.5 * size
        assert c3.get("/api/state").json()["status"] == "empty"
    with make_client(tiny_model, memory_mb=0.5) as c:  # one image alone above the budget: refused at once
        r = upload(c, png(crop))
        assert r.status_code == 413 and "--memory-mb" in r.json()["detail"]


# ---------------------------------------------------------------------------------------------------------- library
def test_data_dir_items_by_id_only(tiny_model, crop, tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    iio.imwrite(data / "sub" / "one.png", crop)
    iio.imwrite(data / "two.png", crop[:100, :100])
    (data / "notes.txt").write_text("not an image")
    (data / ".hidden.png").write_bytes(png(crop))
    outside = tmp_path / "secret.png"
    iio.imwrite(outside, crop)
    (data / "link.png").symlink_to(outside)
    with make_client(tiny_model, data_dir=data) as c:
        items = c.get("/api/library").json()["items"]
        assert sorted(i["name"] for i in items) == ["sub/one.png", "two.png"]
        assert all(str(tmp_path) not in json.dumps(i) for i in items)
        one = next(i["id"] for i in items if i["name"] == "sub/one.png")
        r = c.post("/api/open/library", json={"id": one})
        assert r.status_code == 200 and r.json()["name"] == "one"
        wait_ready(c)
        np.testing.assert_array_equal(iio.imread(io.BytesIO(c.get("/api/image").content)), crop)
        for bad in ("../secret.png", str(outside), "sub/one.png", "link.png", "0" * 16, "..%2f..%2fetc%2fpasswd",
                    "/etc/passwd"):
            r = c.post("/api/open/library", json={"id": bad})
            assert r.status_code == 404, bad
        assert c.post("/api/open/library", json={}).status_code == 422


# ---------------------------------------------------------------------------------------------------------- token
def test_a_non_local_host_requires_the_token(tiny_model):
    s = ServeSettings(host="0.0.0.0").validate()
    assert s.token and len(s.token) >= 16 and s.url().endswith(f"?token={s.token}")
    assert ServeSettings().validate().token is None and ServeSettings(host="::1").validate().token is None
    with make_client(tiny_model, host="0.0.0.0", token="correct-horse") as c:
        for path in ("/", "/static/app.js", "/api/info", "/api/state"):
            assert c.get(path).status_code == 401, path
        assert c.post("/api/add", json={"x": 1, "y": 1}).status_code == 401
        assert c.get("/api/info", headers={TOKEN_HEADER: "wrong-horse!"}).status_code == 401
        assert c.get("/api/info", headers={TOKEN_HEADER: "correct-horse"}).status_code == 200
        assert c.get("/?token=correct-horse").status_code == 200  # the printed URL; sets a cookie for the page
        assert c.get("/api/info").status_code == 200
    with make_client(tiny_model, token="local-but-set") as c:  # a token given on 127.0.0.1 is required too
        assert c.get("/api/info").status_code == 401


# ---------------------------------------------------------------------------------------------------------- command
def test_serve_command_checks_its_arguments(capsys, monkeypatch, tmp_path):
    assert cli_main(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert cli_main(["serve", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli_main(["serve", "--token", "short"]) == 2
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)  # the web extra is not installed
    assert cli_main(["serve"]) == 2
    assert "pip install 'segment-any-cell[web]'" in capsys.readouterr().err


def test_sac_serve_prints_its_url_and_serves(tiny_model):
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "sac.cli", "serve", "--model", tiny_model[1], "--port", str(port), "--engine", "torch"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"sac serve: http://127.0.0.1:{port}/"), line
        import httpx

        for _ in range(200):
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert info["engine"] == "torch" and info["model"]["backbone"] == "vit_tiny"
    finally:
        proc.terminate()
        proc.wait(20)


def test_settings_paths(tmp_path):
    s = ServeSettings(data_dir=tmp_path).validate()
    assert s.train_dir == tmp_path.resolve() / "sac-corrections"
    s = ServeSettings(train_dir=tmp_path / "t").validate()
    assert s.train_dir == (tmp_path / "t").resolve() and s.data_dir is None
    (tmp_path / "f").write_text("x")
    with pytest.raises(SACError, match="not a folder"):
        ServeSettings(train_dir=tmp_path / "f").validate()
    assert ServeSettings().validate().url() == "http://127.0.0.1:8000/"
