import json

from londonlm.artifacts import (StageInputMissing, require_input, sha256_file, sidecar_current,
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
