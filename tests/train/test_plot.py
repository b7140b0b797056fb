"""vla.train.plot: curves of runs' metrics.jsonl as a PNG."""

import json

from PIL import Image

from vla.train.plot import plot_runs


def test_plot_runs_writes_a_png(tmp_path):
    for name, scale in (("a", 1.0), ("b", 2.0)):
        run = tmp_path / name
        run.mkdir()
        rows = [{"step": s, "train/loss": scale / s, "train/lr": 1e-4} for s in range(1, 21)]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = plot_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "out" / "curves.png", ["train/loss", "train/lr"])
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height > 100
