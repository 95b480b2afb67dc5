import json

from londonlm.core.artifacts import (StageInputMissing, require_input, sha256_file, sidecar_current,
                                write_json_atomic, write_sidecar)


def test_atomic_json_and_hash(tmp_path):
    p = write_json_atomic(tmp_path / "a" / "x.json", {"k": 1})
    assert json.loads(p.read_text()) == {"k": 1}
    assert not list(p.parent.glob(".*tmp"))  # no temp file left behind
    assert len(sha256_file(p)) == 64


def test_sidecar_current_and_changes(tmp_path):
    sc = tmp_path / "sidecar.json"
    assert sidecar_current(sc, {"a": "1"}, {"v": 2}) == (False, "no previous output")
    write_sidecar(sc, "stage", {"a": "1"}, {"v": 2, "t": (1, 2)}, {"n": 3})
    assert sidecar_current(sc, {"a": "1"}, {"v": 2, "t": (1, 2)})[0]
    ok, why = sidecar_current(sc, {"a": "2"}, {"v": 2, "t": (1, 2)})
    assert not ok and "inputs changed: a" in why
    ok, why = sidecar_current(sc, {"a": "1"}, {"v": 3, "t": (1, 2)})
    assert not ok and "settings changed: v" in why
    sc.write_text("{broken")
    assert not sidecar_current(sc, {"a": "1"}, {"v": 2})[0]


def test_require_input_names_command(tmp_path):
    try:
        require_input(tmp_path / "nope", "python make_it.py", "thing")
    except StageInputMissing as e:
        assert "python make_it.py" in str(e)
    else:
        raise AssertionError("expected StageInputMissing")


def test_sidecar_can_record_only_libraries_already_loaded(tmp_path, monkeypatch):
    import sys

    from londonlm.core.artifacts import read_json, versions

    (tmp_path / "londonlm_probe_lib.py").write_text("__version__ = '1.2'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "londonlm_probe_lib", raising=False)
    sc = write_sidecar(tmp_path / "a.json", "corpus", {}, {}, libraries=["londonlm_probe_lib", "json"])
    assert set(read_json(sc)["versions"]) <= {"python", "json"}  # not imported just to be listed
    assert "londonlm_probe_lib" not in sys.modules
    assert versions(["londonlm_probe_lib", "not_a_module_xyz"])["londonlm_probe_lib"] == "1.2"
    sc = write_sidecar(tmp_path / "b.json", "corpus", {}, {}, libraries=["londonlm_probe_lib"])
    assert read_json(sc)["versions"]["londonlm_probe_lib"] == "1.2"  # loaded now: recorded


def test_missing_input_is_a_user_error(tmp_path):
    from londonlm.core.errors import LondonLMError

    try:
        require_input(tmp_path / "nope", "python make_it.py")
    except LondonLMError as e:  # scripts print it as one line and exit 2
        assert isinstance(e, FileNotFoundError)
    else:
        raise AssertionError("expected StageInputMissing")
