"""Chapter 5's benchmark table (course_utils.seed_recipe.read_recipe_benchmark) from the JSON the
benchmark writes: the committed run, a missing file, and the 'did not help' rule."""
import json
from pathlib import Path

from course_utils.seed_recipe import read_recipe_benchmark

COMMITTED = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "mlm_recipe.json"


def _row(name, median, lo=None, hi=None, loss=3.8):
    return {"name": name, "time_to_target_median": median, "time_to_target_min": lo if lo is not None else median,
            "time_to_target_max": hi if hi is not None else median, "loss_at_stop": loss, "repeats": 3 if median else 1,
            "tokens_per_second": 1000.0, "mfu": 0.1}


def _bench(rows, ratio=50.0, lower_bound=True):
    return {"rows": rows, "ratio_is_lower_bound": lower_bound, "ratio": ratio, "row_cap_seconds": 120.0,
            "seed": {"time_to_target": None, "train_seconds": 1800.0, "final_val_loss": 4.98,
                     "tokens_per_second": 485.0, "mfu": 0.013},
            "date_utc": "2026-12-02 00:42 UTC", "machine": "2 CPU cores", "load_average_at_start": [0.1, 0.1, 0.1],
            "load_average_at_end": [2.0, 2.0, 2.0], "target": 3.9, "unigram_loss": 4.9, "cap_seconds": 1800.0,
            "peak_flops": {}}


def test_committed_run_reads_into_a_table():
    bench = read_recipe_benchmark(COMMITTED)
    raw = json.loads(COMMITTED.read_text())
    assert bench is not None
    assert list(bench.table.index) == ["seed recipe (Trainer)", *(r["name"] for r in raw["rows"])]
    assert bench.ratio == ("at least " if raw["ratio_is_lower_bound"] else "") + f"{raw['ratio']:,.0f}"


def test_no_committed_run_gives_none(tmp_path):
    assert read_recipe_benchmark(tmp_path / "missing.json") is None
    (tmp_path / "old.json").write_text(json.dumps({"rows": []}))
    assert read_recipe_benchmark(tmp_path / "old.json") is None


def test_a_row_slower_than_the_one_before_did_not_help(tmp_path):
    rows = [_row("a", None, loss=4.5), _row("b", 40.0, 38.0, 42.0), _row("c", 45.0), _row("d", 30.0),
            _row("e", None), _row("f", 20.0)]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(_bench(rows, ratio=45.0)))
    bench = read_recipe_benchmark(path)
    # c is slower than b's slowest run; e never reaches the target after d did; a and f follow no reached row
    assert bench.did_not_help == ["c", "e"]
    assert bench.ratio == "at least 45"
    assert bench.table.loc["a", "time to target (s)"] == "> 120 (loss 4.50)"
    assert bench.table.loc["b", "time to target (s)"] == "40.0 [38.0-42.0]"


def test_single_change_rows_did_not_help_against_the_base(tmp_path):
    rows = [_row("base", 100.0, 90.0, 110.0), _row("- packing", None, loss=6.6), _row("+ dropout", 95.0),
            _row("+ whole words", 80.0, 75.0, 85.0), _row("+ 4 layers", None)]
    raw = {**_bench(rows, ratio=36.0), "base_row": "base", "target_nats_below_unigram": 0.5,
           "ratio_estimate": 120.0, "ratio_estimate_interval": [70.0, 260.0]}
    path = tmp_path / "prose.json"
    path.write_text(json.dumps(raw))
    bench = read_recipe_benchmark(path)
    # additions not faster than the base's fastest run; removals ("- ...") show what a change buys
    assert bench.did_not_help == ["+ dropout", "+ 4 layers"]
    assert any("(unigram 4.90 - 0.5)" in line for line in bench.header)
    assert any("estimated ratio" in line and "120, 90 % interval 70-260" in line for line in bench.header)
