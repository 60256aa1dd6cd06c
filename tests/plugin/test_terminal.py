"""What pytest's terminal shows: the live lines while a scenario runs, and a summary table that fits
the terminal and carries each scenario's own gates."""
import re
import textwrap

from pytest_flopynet.terminal import summary_table

ROW = {"scenario": "network_instability_ci", "rounds": 15, "final_accuracy": 0.98765, "bytes_total": 179_600_000,
       "max_accuracy_drop": 0.0123, "recovery_time_s": 91.0, "outcome": "passed",
       "gate_results": [("final_accuracy >= 0.85", 0.98765, True),
                        ("robustness_metrics.max_accuracy_drop <= 0.01", 0.0123, False)]}
LABEL = "test_fedprox_survives_the_events_and_a_second_partition[seed_3]"  # brackets are not rich markup


def test_the_summary_fits_the_terminal_and_shows_each_gate_with_its_actual_value_and_verdict():
    wide = summary_table([LABEL], [ROW], 200)
    assert len(wide) == 4 and max(map(len, wide)) <= 200
    assert re.match(rf"{re.escape(LABEL)}\s+network_instability_ci\s+15\s+0\.9877\s+179\.6\s+0\.012\s+91\s+"
                    r"final_accuracy >= 0\.85  0\.9877  pass\s+passed$", wide[2]), wide[2]
    assert wide[3].strip() == "max_accuracy_drop <= 0.01  0.0123  FAIL"  # a dotted metric by its last name
    for width in (80, 60):
        narrow = summary_table([LABEL], [ROW], width)
        assert max(map(len, narrow)) <= width
        text = "\n".join(narrow)
        assert "passed" in text and "0.9877" in text and "FAIL" in text
        assert "network_instability_ci" not in text  # the first column to go
        if width == 80:  # the gates keep whole lines; the test name wraps
            assert "final_accuracy >= 0.85  0.9877  pass" in text and "max_accuracy_drop <= 0.01  0.0123  FAIL" in text


def test_a_running_scenario_writes_a_line_per_round_and_event_quiet_under_q(pytester):
    pytester.makefile(".scenario.yaml", tiny=textwrap.dedent("""\
        name: tiny
        fl_config: {model_architecture: logreg, total_rounds: 3, clients_per_round: 3, client_data_sizes: [60, 60, 60]}
        network_config: {node_count: 4}
        events:
          - {event_type: network_latency_increase, trigger_time: 0.1, target: all_links,
             parameters: {latency_increase_ms: 40}, duration: 0.2}
        """))
    live = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    live.assert_outcomes(passed=1)
    lines = [line.strip() for line in live.stdout.lines if line.startswith("    tiny: ")]
    assert [line.split("  ")[0] for line in lines if "round" in line] == ["tiny: round 1/3", "tiny: round 2/3",
                                                                         "tiny: round 3/3"]
    assert "tiny: network_latency_increase starts on all_links at scenario 0.1 s" in lines
    assert "tiny: network_latency_increase ends on all_links at scenario 0.3 s" in lines
    quiet = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    assert not [line for line in quiet.stdout.lines if "round 1/3" in line]
    logged = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--log-cli-level=INFO")
    assert len([line for line in logged.stdout.lines if "tiny: round" in line]) == 3  # pytest's own live log, once


def test_a_short_test_name_leaves_its_room_to_the_gates():
    row = {**ROW, "gate_results": ROW["gate_results"][:1]}
    (head, rule, line) = summary_table(["basic"], [row], 80)
    assert re.fullmatch(r"basic\s+15\s+0\.9877\s+final_accuracy >= 0\.85  0\.9877  pass\s+passed", line), line
