"""A family of time-locked models in one command: ``run_grid.py --cutoffs`` cuts one collected
corpus per cutoff, trains a tokenizer and a model on each view, probes each for leakage and
tabulates them; identical views share their tokenizer and token cache."""
import importlib.util
import json
import os

import pytest

from conftest import REPO, write_dated_source
from londonlm.core import Layout
from londonlm.corpus import CollectionOptions, build_corpus, read_manifest

YEARS = [1650, 1680, 1705, 1722, 1740, 1790, 1820, 1850]
FAST = ["--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1",
        "--save_steps", "100", "--eval_steps", "100", "--leakage_limit", "20"]


def grid():
    spec = importlib.util.spec_from_file_location("run_grid", REPO / "10_scripts" / "run_grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    src = write_dated_source(root / "src", YEARS, validation_up_to=1700, percent=30)
    layout = Layout(root)
    build_corpus(layout.processed_dir, layout.metadata_dir,
                 options=CollectionOptions(validation_percent=30, log=lambda *_: None), source_dir=src)
    # 1760 and 1780 keep the same documents (none dated 1741-1780): one tokenizer, one cache
    argv = ["--preset", "micro", "--root", str(root), "--cutoffs", "1760,1700,1780", "--max_steps", "3",
            "--prefix", "fam", *FAST]
    assert grid().main(argv) == 0
    return root, layout, argv


def test_each_member_is_trained_only_on_its_view(family):
    root, layout, _ = family
    for cutoff in (1700, 1760, 1780):
        view = read_manifest(layout.cutoff_dir(cutoff))
        assert view and all(r["year"] <= cutoff for r in view)
        info = json.loads(layout.run(f"fam-to{cutoff}").run_info.read_text())
        assert info["corpus_time"]["cutoff_year"] == cutoff
        assert info["corpus_time"]["years"][1] <= cutoff
        assert info["processed_dir"] == str(layout.cutoff_dir(cutoff))
    tok = json.loads((layout.tokenizer_dir("london_historical_bpe", 1700) / "tokenizer.json").read_text())
    eras = [t["content"] for t in tok["added_tokens"] if t["content"].endswith("s|>")]
    assert eras and all(int(e[2:6]) <= 1700 for e in eras), eras  # no era token past the cutoff


def test_identical_views_share_tokenizer_and_cache(family):
    root, layout, _ = family
    assert not layout.tokenizer_dir("london_historical_bpe", 1780).exists()
    info = json.loads(layout.run("fam-to1780").run_info.read_text())
    assert info["tokenizer_dir"] == str(layout.tokenizer_dir("london_historical_bpe", 1760))
    a = layout.run("fam-to1760").cache_dir / "train.bin"
    b = layout.run("fam-to1780").cache_dir / "train.bin"
    assert os.path.samefile(a, b)  # hard-linked, not encoded twice


def test_leakage_probes_and_the_table(family):
    root, layout, _ = family
    for cutoff in (1700, 1760, 1780):
        kept = json.loads(layout.run(f"fam-to{cutoff}").leakage.read_text())
        result = kept["result"]
        assert result["cutoff_year"] == cutoff and result["facts"]["n"] == 20
        assert result["facts"]["before"]["n"] + result["facts"]["after"]["n"] == 20
    table = (root / "09_models" / "comparisons" / "fam.md").read_text()
    assert "facts > cutoff" in table and "leak?" in table
    rows = [line for line in table.splitlines() if line.startswith("| fam-to")]
    assert [r.split("|")[1].strip() for r in rows] == ["fam-to1700", "fam-to1760", "fam-to1780"]
    assert "1650–1680" in rows[0]


def test_a_second_call_skips_every_member(family, capsys):
    root, layout, argv = family
    capsys.readouterr()
    assert grid().main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == 3 and out.count("leakage probes: outputs are current") == 3


def test_cutoffs_refuse_lists_of_learning_rates(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        grid().main(["--cutoffs", "1700", "--learning_rates", "1e-3,2e-3", "--root", str(tmp_path)])
    assert stop.value.code == 2 and "--cutoffs" in capsys.readouterr().err


def test_bad_cutoff_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        grid().main(["--cutoffs", "17x0", "--root", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("error:")


def test_a_member_whose_view_changed_starts_over(family, capsys):
    root, layout, argv = family
    info_path = layout.run("fam-to1700").run_info
    info = json.loads(info_path.read_text())
    info["cache"]["manifest_sha256"] = "0" * 64  # as if trained on another view of the corpus
    info_path.write_text(json.dumps(info))
    capsys.readouterr()
    argv = [a if a != "1760,1700,1780" else "1700" for a in argv]
    assert grid().main(argv) == 0
    assert "fam-to1700: corpus changed; starting it over" in capsys.readouterr().out
    assert list(layout.checkpoints_dir.glob("fam-to1700.previous-*"))
    assert json.loads(info_path.read_text())["cache"]["manifest_sha256"] != "0" * 64


def test_a_member_asked_for_other_settings_starts_over(family, capsys):
    """A finished member was skipped whatever this call asked (more steps, another rate) and its
    leakage figures tabulated as this call's; it starts over now, the old run moved aside."""
    root, layout, argv = family
    argv = [a if a != "1760,1700,1780" else "1760" for a in argv]
    argv[argv.index("--max_steps") + 1] = "4"
    capsys.readouterr()
    assert grid().main(argv) == 0
    out = capsys.readouterr().out
    assert "fam-to1760: training settings changed: max_steps 3 -> 4; starting it over" in out
    assert json.loads(layout.run("fam-to1760").run_info.read_text())["global_step"] == 4
    assert list(layout.checkpoints_dir.glob("fam-to1760.previous-*"))
    capsys.readouterr()
    assert grid().main(argv) == 0  # and is current for the same request
    assert "fam-to1760: finished earlier, skipped" in capsys.readouterr().out
