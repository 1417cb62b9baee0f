"""What a first launch says before its long steps (stand-in base, image build), and that later
launches say nothing: ensure_recipe_image with the engine calls replaced by fakes."""

from __future__ import annotations

import io

import pytest

from rayhpc.common.user_error import UserError
from rayhpc.containers import images
from rayhpc.containers.progress import Progress
from rayhpc.containers.standin import OS_IMAGE

RAY_IMAGE = "rayhpc/ray:2.60.0-py311-cpu"
STANDIN = "rayhpc/ray-standin:2.60.0-py311-cpu"


class FakeEngine:
    """Images present on a fake engine; which bases can be pulled; what was built, in order."""

    def __init__(self, monkeypatch, present=(), pullable=()):
        self.present = set(present)
        self.pullable = set(pullable)
        self.done: list[str] = []
        monkeypatch.setattr(images, "connect", lambda: self)
        monkeypatch.setattr(images, "image_exists", lambda api, ref: ref in self.present)
        monkeypatch.setattr(images, "ensure_image", self.ensure_image)
        monkeypatch.setattr(images, "build_standin_base", self.build_standin_base)
        monkeypatch.setattr(images, "debootstrap_image", self.debootstrap_image)
        monkeypatch.setattr(images, "build_recipe_image", self.build_recipe_image)

    def ensure_image(self, api, ref, progress, hint, platform=None):
        if ref in self.present:
            return
        if ref not in self.pullable:
            raise UserError(f"image {ref} is not here and cannot be pulled")
        self.done.append(f"pull {ref}")
        self.present.add(ref)

    def build_standin_base(self, recipe_name, progress):
        self.done.append(f"standin {recipe_name}")

    def debootstrap_image(self, api, ref, suite, mirror, progress, platform="linux/amd64"):
        self.done.append(f"debootstrap {ref} {suite}")

    def build_recipe_image(self, recipe_name, variant, base, progress):
        self.done.append(f"build {recipe_name} {variant} on {base}")
        return "tag"


def said(recipe="ray", variant="cpu") -> tuple[list[str], str]:
    out = io.StringIO()
    images.ensure_recipe_image(recipe, variant, progress=Progress(out, tty=False))
    return out.getvalue().splitlines(), out.getvalue()


def test_later_launches_say_nothing(monkeypatch):
    engine = FakeEngine(monkeypatch, present={RAY_IMAGE})
    lines, _ = said()
    assert lines == []
    assert engine.done == []


def test_first_launch_without_a_registry_says_what_it_builds_and_how_long(monkeypatch):
    engine = FakeEngine(monkeypatch)
    lines, _ = said()
    assert lines == [
        f"rayhpc: image {RAY_IMAGE} is not built yet: building it now, once (later runs skip "
        "this)",
        f"rayhpc: rayproject/ray:2.60.0-py311-cpu cannot be pulled here: building the stand-in "
        f"Ray base {STANDIN} first (debootstrap, Python, Ray; about 90 s, once)",
        f"rayhpc: building image {RAY_IMAGE} from recipe ray (about 10 s)"]
    assert engine.done == ["standin ray", f"build ray cpu on {STANDIN}"]


def test_stand_in_on_a_debian_base_already_there_is_quicker(monkeypatch):
    FakeEngine(monkeypatch, present={OS_IMAGE})
    lines, _ = said()
    assert lines[1].endswith("first (Python, Ray; about 45 s, once)")


def test_stand_in_already_built_is_only_named(monkeypatch):
    engine = FakeEngine(monkeypatch, present={STANDIN})
    lines, _ = said()
    assert lines[1] == (f"rayhpc: rayproject/ray:2.60.0-py311-cpu cannot be pulled here; using "
                        f"the stand-in base {STANDIN}")
    assert len(lines) == 3
    assert engine.done == [f"build ray cpu on {STANDIN}"]


def test_real_base_pulled_then_built(monkeypatch):
    engine = FakeEngine(monkeypatch, pullable={"rayproject/ray:2.60.0-py311-cpu"})
    lines, text = said()
    assert "stand-in" not in text
    assert lines[-1] == f"rayhpc: building image {RAY_IMAGE} from recipe ray (about 10 s)"
    assert engine.done == ["pull rayproject/ray:2.60.0-py311-cpu",
                           "build ray cpu on rayproject/ray:2.60.0-py311-cpu"]


def test_tool_recipe_debootstraps_its_debian_and_names_no_unmeasured_time(monkeypatch):
    engine = FakeEngine(monkeypatch)
    lines, _ = said("apptainer", "default")
    assert lines[1] == ("rayhpc: debian:sid-slim cannot be pulled here: building the stand-in "
                        "rayhpc/debian:sid by debootstrap first (about 30 s, once)")
    assert lines[2] == "rayhpc: building image rayhpc/apptainer:default from recipe apptainer"
    assert engine.done == ["debootstrap rayhpc/debian:sid sid",
                           "build apptainer default on rayhpc/debian:sid"]


@pytest.mark.parametrize("present", [set(), {STANDIN}])
def test_first_run_lines_stay_on_a_terminal(monkeypatch, present):
    FakeEngine(monkeypatch, present=present)
    out = io.StringIO()
    images.ensure_recipe_image(progress=Progress(out, tty=True))
    kept = [line.split("\r\x1b[K")[-1] for line in out.getvalue().split("\n") if line]
    assert kept[0].startswith("rayhpc: image ") and kept[-1].startswith("rayhpc: building image")
