"""A package's exports loaded on first use: nothing imported before a name is read, the name
then the module's own object, an unknown name the usual AttributeError, dir() showing them."""
import subprocess
import sys

import pytest

PACKAGE = {
    "__init__.py": "from londonlm.core import lazy_exports\n"
                   "EAGER = 1\n"
                   "_lazy, __getattr__, __dir__ = lazy_exports(__name__, {'heavy': ('Big', 'make'), 'sub.part': ('PART',)})\n"
                   "__all__ = ['EAGER', *_lazy]\n",
    "heavy.py": "import sys\nsys.modules[__package__].LOADS = getattr(sys.modules[__package__], 'LOADS', 0) + 1\n"
                "class Big: pass\ndef make(): return Big()\n",
    "sub/__init__.py": "",
    "sub/part.py": "PART = 'part'\n",
}


@pytest.fixture
def lazypkg(tmp_path, monkeypatch):
    for rel, text in PACKAGE.items():
        (tmp_path / "lazypkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "lazypkg" / rel).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [m for m in sys.modules if m == "lazypkg" or m.startswith("lazypkg.")]:
        del sys.modules[name]


def test_a_name_loads_its_module_when_first_read_and_once(lazypkg):
    import lazypkg

    assert "lazypkg.heavy" not in sys.modules and "lazypkg.sub.part" not in sys.modules
    assert isinstance(lazypkg.make(), lazypkg.Big) and lazypkg.LOADS == 1
    from lazypkg import PART, Big  # the from-import form reads through the same hook

    assert PART == "part" and Big is sys.modules["lazypkg.heavy"].Big and lazypkg.LOADS == 1
    assert lazypkg.__all__ == ["EAGER", "Big", "make", "PART"]


def test_an_unknown_name_is_the_usual_attribute_error_and_dir_lists_every_export(lazypkg):
    import lazypkg

    with pytest.raises(AttributeError, match="module 'lazypkg' has no attribute 'nope'"):
        lazypkg.nope
    with pytest.raises(ImportError):
        from lazypkg import nope  # noqa: F401
    assert {"EAGER", "Big", "make", "PART"} <= set(dir(lazypkg))
    assert "lazypkg.heavy" not in sys.modules  # listing them imports nothing


def test_the_packages_import_without_the_trainer():
    """The training, chat, evaluation, publishing and corpus packages import none of the
    Trainer's code until a name that needs it is read."""
    code = ("import sys, londonlm.training, londonlm.chat, londonlm.evaluation, londonlm.publishing, "
            "londonlm.corpus\n"
            "print([m for m in ('transformers.trainer', 'londonlm.training.step.trainer') if m in sys.modules])\n"
            "londonlm.training.run_training\n"
            "print([m for m in ('transformers.trainer', 'londonlm.training.step.trainer') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.splitlines() == ["[]", "['transformers.trainer', 'londonlm.training.step.trainer']"], \
        out.stdout + out.stderr[-2000:]
