"""tools/remote_gpu's LIBERO packing: the recorder's file lists (libero_files.py) and libero_env.sh, which unpacks the
parts only once every part listed in the manifest has arrived intact."""

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tools.remote_gpu.libero_files import _model_files, relative_to_roots

REPO = Path(__file__).resolve().parents[2]


def test_model_files_are_the_file_attributes_of_the_compiled_xml():
    xml = """<mujoco><asset><mesh name="a" file="/s/robosuite/models/assets/a.stl"/>
             <texture name="t" type="2d" file="/s/assets/t.png"/><material name="m"/></asset>
             <worldbody><body><geom mesh="a"/></body></worldbody></mujoco>"""
    env = SimpleNamespace(env=SimpleNamespace(model=SimpleNamespace(get_xml=lambda: xml)))
    assert _model_files(env) == {"/s/robosuite/models/assets/a.stl", "/s/assets/t.png"}


def test_files_outside_the_roots_are_dropped_and_the_rest_made_relative(tmp_path):
    site, other = tmp_path / "site", tmp_path / "stdlib"
    paths = {site / "robosuite" / "a.xml", site / "libero" / "b.bddl", other / "os.py"}
    assert relative_to_roots(paths, [site]) == ["libero/b.bddl", "robosuite/a.xml"]
    assert relative_to_roots(paths, [site, other]) == ["libero/b.bddl", "os.py", "robosuite/a.xml"]


def _parts(root: Path, n_parts: int) -> list[Path]:
    """A site (libero/x.py) packed as build_libero.sh packs it: one xz stream cut into n parts, and the MANIFEST."""
    site = root / "src"
    (site / "libero").mkdir(parents=True)
    (site / "libero" / "x.py").write_text("VALUE = 1\n" + "# filler\n" * 20000)
    libsite = root / ".libsite"
    libsite.mkdir()
    subprocess.run(f"tar -C {site} -cf - . | xz -0 > {root}/site.tar.xz && split -n {n_parts} -d "
                   f"--numeric-suffixes=1 -a 2 --additional-suffix=.tar.xz {root}/site.tar.xz "
                   f"{libsite}/libero_site.part && cd {libsite} && "
                   "sha256sum libero_site.part*.tar.xz > MANIFEST", shell=True, check=True)
    return sorted(libsite.glob("libero_site.part*.tar.xz"))


def _source(root: Path) -> subprocess.CompletedProcess:
    script = REPO / "tools" / "remote_gpu" / "libero_env.sh"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "LIBERO_SITE": str(root / "site_libero")}
    return subprocess.run(["bash", "-c", f"source {script} && echo SOURCED"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_missing_part_is_named_and_nothing_is_unpacked(tmp_path):
    parts = _parts(tmp_path, 3)
    parts[1].unlink()
    result = _source(tmp_path)
    assert "SOURCED" not in result.stdout
    assert "parts not copied yet: libero_site.part02.tar.xz" in result.stderr
    assert not (tmp_path / "site_libero").exists()


def test_a_damaged_part_is_refused(tmp_path):
    parts = _parts(tmp_path, 2)
    parts[0].write_bytes(parts[0].read_bytes()[:-1] + b"\0")
    result = _source(tmp_path)
    assert "a part is damaged" in result.stderr and not (tmp_path / "site_libero").exists()


@pytest.mark.parametrize("n_parts", [1, 3])
def test_the_parts_are_joined_in_order_and_unpacked(tmp_path, n_parts):
    _parts(tmp_path, n_parts)
    _source(tmp_path)  # prepare() may fail here (no LIBERO in this bare environment): the unpacking is checked
    unpacked = tmp_path / "site_libero" / "libero" / "x.py"
    assert unpacked.read_text() == (tmp_path / "src" / "libero" / "x.py").read_text()
    assert not (tmp_path / "site_libero.tmp").exists()
