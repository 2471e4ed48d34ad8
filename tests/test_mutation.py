"""The mutation benchmark's arithmetic: mutmut's result lines, counted per module."""

from benchmarks.mutation import (
    merge_scores,
    module_of,
    module_scores,
    parse_results,
    read_scores,
    table,
)

RESULTS = """
    pipeline.statistics.x_sign_flip_p_value__mutmut_1: killed
    pipeline.statistics.x_sign_flip_p_value__mutmut_2: survived
    pipeline.statistics.x_mean_interval__mutmut_1: killed
    pipeline.config.xǁParamsǁ_check_rows__mutmut_3: no tests
    pipeline.config.x_split_sizes__mutmut_1: killed
    pipeline.config.x_split_sizes__mutmut_2: not checked
    pipeline.config.x_split_sizes__mutmut_4: timeout
"""


def test_mutant_names_map_to_their_module():
    assert module_of("pipeline.statistics.x_sign_flip_p_value") == "pipeline/statistics.py"
    assert module_of("pipeline.config.xǁParamsǁ_check_rows") == "pipeline/config.py"


def test_scores_count_every_mutant_that_was_not_killed_against_the_module():
    scores = {score.module: score for score in module_scores(parse_results(RESULTS))}
    statistics, config = scores["pipeline/statistics.py"], scores["pipeline/config.py"]
    assert (statistics.mutants, statistics.killed, statistics.survived) == (3, 2, 1)
    assert statistics.score == 2 / 3
    assert (config.mutants, config.killed, config.no_tests, config.timeout, config.other) == (
        4,
        1,
        1,
        1,
        1,
    )
    assert config.score == 0.25


def test_table_marks_modules_below_the_target():
    text = table(module_scores(parse_results(RESULTS)))
    assert "| `pipeline/config.py` | 4 | 1 | 0 | 1 | 1 | 1 | 25% (below 85%) |" in text
    assert "| `pipeline/statistics.py` | 3 | 2 | 1 | 0 | 0 | 0 | 67% (below 85%) |" in text


def test_a_run_of_some_modules_keeps_the_rows_of_the_others():
    previous = module_scores(parse_results(RESULTS))
    # A later run of statistics only: mutmut lists config's mutants as not checked.
    later = module_scores(
        parse_results(
            """
    pipeline.statistics.x_sign_flip_p_value__mutmut_1: killed
    pipeline.statistics.x_sign_flip_p_value__mutmut_2: killed
    pipeline.statistics.x_mean_interval__mutmut_1: survived
    pipeline.config.x_split_sizes__mutmut_2: not checked
    pipeline.store.x_redact__mutmut_1: killed
"""
        )
    )
    merged = {item.module: item for item in merge_scores(previous, later)}
    assert sorted(merged) == ["pipeline/config.py", "pipeline/statistics.py", "pipeline/store.py"]
    assert merged["pipeline/config.py"].mutants == 4  # the previous row, as it was
    assert (merged["pipeline/statistics.py"].killed, merged["pipeline/statistics.py"].survived) == (
        2,
        1,
    )
    assert merged["pipeline/store.py"].score == 1.0


def test_scores_written_are_read_back(tmp_path):
    import json
    from dataclasses import asdict

    scores = module_scores(parse_results(RESULTS))
    path = tmp_path / "mutation.json"
    path.write_text(json.dumps([asdict(item) | {"score": item.score} for item in scores]))
    assert read_scores(path) == scores
    assert read_scores(tmp_path / "none.json") == []
