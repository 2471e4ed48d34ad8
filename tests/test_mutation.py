"""The mutation benchmark's arithmetic: mutmut's result lines, counted per module."""

from benchmarks.mutation import module_of, module_scores, parse_results, table

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
