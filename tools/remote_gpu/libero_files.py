"""The files a LIBERO suite's envs read, for build_libero.sh, which keeps only those of the packages' asset folders.

Every task of the suite is built as eval.py builds it (vla.eval.libero_env.make_env, small cameras), reset, set to its
first initial state and stepped once, with the locally installed LIBERO. Two sources name the files read:

  * Python's audit hook on "open" events: the BDDL, initial-state and object XML files LIBERO and robosuite parse;
  * the `file=` attributes of each env's compiled model XML (robosuite's `model.get_xml()`, asset paths made absolute
    by robosuite's MujocoXML): MuJoCo opens meshes and textures from C, where no audit hook sees them.

Prints the files under the given roots (site-packages folders), relative to the root that holds them, one a line:
    python3 -m tools.remote_gpu.libero_files libero_spatial --root <site-packages> --out keep.txt
With --check instead, every task is built, reset to its first initial state and stepped (check_libero_site.sh runs it
on a pruned site): one line per task with the rendered cameras' shapes, an error if a camera renders a blank image.
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _model_files(env) -> set[str]:
    """Absolute paths in the `file` attributes of the env's compiled model (meshes, textures, skins, includes)."""
    root = ET.fromstring(env.env.model.get_xml())
    return {element.get("file") for element in root.iter() if element.get("file")}


def suite_files(suite: str, image_size: int = 64) -> set[Path]:
    """The resolved paths of every file the suite's tasks open or load (see the module docstring)."""
    from vla.configs import load_group
    from vla.eval.libero_env import make_env, prepare

    opened: set[str] = set()

    def hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.add(os.fsdecode(args[0]))

    prepare()
    sys.addaudithook(hook)  # cannot be removed: the recording lasts as long as this process
    task = load_group("task", suite, [f"task.image_size={image_size}"])
    from libero.libero import benchmark

    n_tasks = benchmark.get_benchmark_dict()[suite]().n_tasks
    for task_id in range(n_tasks):
        env, _, init_states = make_env(task, task_id)
        try:
            env.reset()
            env.set_init_state(init_states[0])
            env.step([0.0] * 6 + [-1.0])
            opened |= _model_files(env)
        finally:
            env.close()
    return {Path(p).resolve() for p in opened if os.path.isfile(p)}


def check_suite(suite: str, steps: int, image_size: int = 64) -> None:
    """Build, reset and step every task of the suite; fail if a camera renders one flat colour (a missing texture
    or mesh makes MuJoCo fail to compile the model, so building is the check of the files; rendering that of EGL)."""
    import time

    import numpy as np

    from vla.configs import load_group
    from vla.eval.libero_env import installed_paths, make_env, prepare

    prepare()
    package, assets = installed_paths()
    print(f"libero from {package}, assets from {assets}")
    task = load_group("task", suite, [f"task.image_size={image_size}"])
    from libero.libero import benchmark

    for task_id in range(benchmark.get_benchmark_dict()[suite]().n_tasks):
        start = time.perf_counter()
        env, language, init_states = make_env(task, task_id)
        try:
            env.reset()
            obs = env.set_init_state(init_states[0])
            for _ in range(steps):
                obs, _, _, _ = env.step([0.0] * 6 + [-1.0])
        finally:
            env.close()
        images = {camera: obs[f"{camera}_image"] for camera in task.libero.cameras}
        flat = [camera for camera, image in images.items() if np.asarray(image).std() == 0]
        if flat:
            raise SystemExit(f"{suite} task {task_id}: cameras {flat} rendered a blank image")
        shapes = ", ".join(f"{camera} {tuple(image.shape)}" for camera, image in images.items())
        print(f"task {task_id} ({language}): {steps} steps, {shapes}, {time.perf_counter() - start:.1f} s")


def relative_to_roots(paths: set[Path], roots: list[Path]) -> list[str]:
    """`paths` under one of `roots` (resolved), relative to it; the others (the standard library, ...) dropped."""
    resolved = [root.resolve() for root in roots]
    kept = set()
    for path in paths:
        for root in resolved:
            if path.is_relative_to(root):
                kept.add(str(path.relative_to(root)))
                break
    return sorted(kept)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", help="a LIBERO suite: libero_spatial, libero_object, libero_goal, libero_10, ...")
    parser.add_argument("--root", action="append", type=Path, default=[],
                        help="a folder whose files are listed (repeatable), e.g. site-packages")
    parser.add_argument("--out", type=Path, help="the list to write")
    parser.add_argument("--check", type=int, metavar="STEPS", help="build and step every task instead")
    args = parser.parse_args(argv)
    if args.check is not None:
        check_suite(args.suite, args.check)
        return
    if not args.root or args.out is None:
        parser.error("--root and --out are needed to list the files")
    files = relative_to_roots(suite_files(args.suite), args.root)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text("".join(f"{f}\n" for f in files))
    tmp.replace(args.out)
    print(f"{args.suite}: {len(files)} files read under {', '.join(map(str, args.root))} -> {args.out}")


if __name__ == "__main__":
    main()
