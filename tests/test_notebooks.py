"""The four master notebooks: their structure (parameters, exercises, language, no outputs) and a real smoke run.

The smoke run executes all four with papermill exactly as `python -m dpo_lab run` does, then 03 again at
another beta and 04 again, and checks what a student and an instructor would look at: the run folder's
layout, every beta kept, 04 comparing both, executed notebooks free of errors and warning spam.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import re

import nbformat
import pytest

import dpo_lab
from dpo_lab.course import selfcheck
from dpo_lab.course.notebooks import (
    NOTEBOOKS,
    _select,
    executed_name,
    master_notebooks,
    notebook_parameters,
    repo_root,
    run_lab,
)

ROOT = repo_root()
EXERCISES = {  # notebook -> the public API names its exercise cells must define
    "01-Setup_and_Data.ipynb": {"extract_prompt", "PreferenceDataCollator"},
    "02-SFT_Baseline.ipynb": {"sequence_logprobs"},
    "03-DPO_Training.ipynb": {"dpo_loss", "dpo_step"},
    "04-Evaluation_and_Compare.ipynb": {"win_rate"},
}
# Characters that exist only in Simplified Chinese (their Traditional forms differ): prose must be zh-TW.
SIMPLIFIED_ONLY = set("这们为说个时练习实现计训过题对该还样开关进数据长码网络读写爱东车门问间听见观经应认让请论资")


def _nb(name):
    return nbformat.read(ROOT / name, as_version=4)


def _tags(cell):
    return cell.metadata.get("tags", [])


def test_the_four_notebooks_exist_under_their_exact_names():
    assert [p.name for p in master_notebooks()] == list(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    for i, cell in enumerate(_nb(name).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_comes_first_and_papermill_can_read_every_line(name):
    from papermill.translators import PythonTranslator

    code_cells = [c for c in _nb(name).cells if c.cell_type == "code"]
    first = code_cells[0]
    assert "parameters" in _tags(first), f"{name}: the first code cell must be tagged 'parameters'"
    declared = notebook_parameters(ROOT / name)
    assert declared["profile"] == "auto" and "run_dir" in declared and "seed" in declared
    assignments = [line for line in first.source.splitlines() if re.match(r"^\w+\s*=", line)]
    parsed = PythonTranslator.inspect(first)
    assert len(parsed) == len(assignments) == len(declared), f"{name}: papermill could not parse some parameter lines"


def test_notebook_04_defaults_are_the_evaluate_commands_defaults():
    """Same defaults, same numbers: `python -m dpo_lab evaluate` without --param measures what 04 measures."""
    from dpo_lab.run.config import EVAL_FIELDS, eval_settings, get_config

    params = {}
    exec(_nb("04-Evaluation_and_Compare.ipynb").cells[1].source, {}, params)  # the parameters cell: plain assignments
    missing = set(EVAL_FIELDS) - set(params)
    assert not missing, f"evaluation settings that 04's parameters cell does not declare: {sorted(missing)}"
    for profile in ("cpu", "gpu", "smoke"):
        assert {k: params[k] for k in EVAL_FIELDS} == eval_settings(get_config(profile)), profile


def test_notebook_03_exposes_its_training_knobs():
    from dpo_lab.run.config import get_config

    declared = notebook_parameters(ROOT / "03-DPO_Training.ipynb")
    assert declared["beta"] is None  # the profile's default, which the parameters cell's comment states
    comment = next(line for line in _nb("03-DPO_Training.ipynb").cells[1].source.splitlines() if "beta =" in line)
    assert f"cpu {get_config('cpu').beta:g}" in comment and f"gpu {get_config('gpu').beta:g}" in comment, comment
    assert {"learning_rate", "steps", "use_reference_cache", "trl_steps"} <= set(declared)


def _exercise_namespace(name):
    namespace: dict = {"loss_fn": dpo_lab.dpo_loss}  # what notebook 03's dpo_loss self-check cell picks before dpo_step
    for cell in _nb(name).cells:
        if "exercise" in _tags(cell):
            exec(compile(cell.source, f"{name}:exercise", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_exercises_are_marked_and_match_the_public_api(name):
    cells = [c for c in _nb(name).cells if "exercise" in _tags(c)]
    assert cells, f"{name} has no exercise cell"
    for cell in cells:
        assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION") == 1
        assert cell.source.index("### BEGIN SOLUTION") < cell.source.index("### END SOLUTION")
    namespace = _exercise_namespace(name)
    for api_name in EXERCISES[name]:
        assert api_name in dpo_lab.__all__, f"{api_name} is not public API"
        ours, reference = namespace[api_name], getattr(dpo_lab, api_name)
        if inspect.isclass(reference):
            ours, reference = ours.__init__, reference.__init__
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(reference).parameters), api_name
    # every exercise is followed by its self-check cell
    tags = [_tags(c) for c in _nb(name).cells if c.cell_type == "code"]
    for i, t in enumerate(tags):
        if "exercise" in t:
            assert "selfcheck" in tags[i + 1], f"{name}: exercise cell without a self-check right after it"


def test_master_solutions_pass_their_self_checks():
    for name, api_names in EXERCISES.items():
        namespace = _exercise_namespace(name)
        for api_name in api_names:
            assert selfcheck.check(api_name, namespace[api_name], verbose=False), (
                f"{name}: the master {api_name} fails its self-check"
            )


def test_self_checks_reject_an_unfinished_or_buggy_exercise():
    def unfinished(*args, **kwargs):
        raise NotImplementedError("練習")

    def mean_without_shift(logits, input_ids, loss_mask, average=False):
        import torch

        logps = torch.log_softmax(logits.float(), -1).gather(-1, input_ids.unsqueeze(-1)).squeeze(-1)
        return (logps * loss_mask).sum(-1) / loss_mask.sum(-1)

    assert not selfcheck.check_sequence_logprobs(mean_without_shift, verbose=False)
    assert not selfcheck.check_win_rate(unfinished, verbose=False)
    assert not selfcheck.check_dpo_loss(lambda pc, pr, rc, rr, beta: unfinished(), verbose=False)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_prose_is_traditional_chinese_with_questions_and_instructor_answers(name):
    cells = _nb(name).cells
    prose = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert len(re.findall(r"[\u4e00-\u9fff]", prose)) > 800, f"{name}: too little Chinese prose"
    found = sorted(set(prose) & SIMPLIFIED_ONLY)
    assert not found, f"{name}: Simplified-only characters {found} in the prose"
    assert "檢查你的理解" in prose
    assert any("instructor" in _tags(c) for c in cells), f"{name}: no instructor-only answer cell"
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert not re.search(r"[\u4e00-\u9fff]", code.replace("練習", "")), f"{name}: code cells should be English"


def test_notebook_03_derives_the_loss_in_latex():
    prose = "\n".join(c.source for c in _nb("03-DPO_Training.ipynb").cells if c.cell_type == "markdown")
    for needed in (
        "Bradley–Terry",
        r"\log Z(x)",
        r"\mathcal{L}_{\mathrm{DPO}}",
        "implicit reward",
        r"\mathbb{D}_{\mathrm{KL}}",
    ):
        assert needed in prose, needed


def test_select_and_executed_names():
    assert _select(None) == list(NOTEBOOKS)
    assert _select(["4", "03"]) == [NOTEBOOKS[2], NOTEBOOKS[3]]
    with pytest.raises(ValueError, match="unknown notebook"):
        _select(["05"])
    assert executed_name(NOTEBOOKS[2], {"beta": 0.5}) == "03-DPO_Training.beta_0.5.ipynb"
    assert executed_name(NOTEBOOKS[0], {"beta": 0.5}) == NOTEBOOKS[0]


def test_run_lab_rejects_an_undeclared_parameter_before_running_anything(tmp_path):
    with pytest.raises(ValueError, match="no parameter"):
        run_lab("smoke", tmp_path / "run", parameters={"02": {"beta": 0.3}})
    assert not (tmp_path / "run").exists()


def test_cli_param_parsing():
    from dpo_lab.cli import parse_notebook_param

    assert parse_notebook_param("03:learning_rate=1e-5") == ("03", "learning_rate", 1e-5)
    assert parse_notebook_param("dataset=C:/data/x.jsonl") == ("*", "dataset", "C:/data/x.jsonl")
    # Python spellings are Python values: the string "False" would be truthy in the notebook
    assert parse_notebook_param("03:run_round2=True") == ("03", "run_round2", True)
    assert parse_notebook_param("03:run_round2=False") == ("03", "run_round2", False)
    assert parse_notebook_param("03:steps=None") == ("03", "steps", None)
    assert parse_notebook_param("03:loss_type=conservative") == ("03", "loss_type", "conservative")
    with pytest.raises(SystemExit):
        parse_notebook_param("03:=1")


# ------------------------------------------------------------------------------------------ the smoke run


def _problems(path):
    """Errors and warning text in an executed notebook's outputs."""
    out = []
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        for o in cell.get("outputs", []):
            if o.output_type == "error":
                out.append(f"cell {i}: {o.ename}: {o.evalue}")
            elif (
                o.output_type == "stream"
                and o.name == "stderr"
                and re.search(r"warning|traceback", o.text, re.IGNORECASE)
            ):
                out.append(f"cell {i} stderr: {o.text[:300]}")
    return out


@pytest.fixture(scope="module")
def smoke_lab(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lab") / "smoke"
    first = run_lab("smoke", run_dir, progress=False)
    terminal = io.StringIO()  # the second run shows progress, as `python -m dpo_lab run` does on a terminal
    with contextlib.redirect_stderr(terminal):
        again = run_lab(
            "smoke", run_dir, only=["03", "04"], beta=0.5, progress=True, parameters={"03": {"run_round2": True}}
        )
    return run_dir, first, again, terminal.getvalue()


@pytest.mark.slow
def test_smoke_lab_runs_all_four_then_another_beta(smoke_lab):
    run_dir, first, again, _ = smoke_lab
    assert [r["notebook"] for r in first] == list(NOTEBOOKS)
    assert [r["notebook"] for r in again] == [NOTEBOOKS[2], NOTEBOOKS[3]]
    for stage in ("01_data", "02_sft", "03_dpo/beta_0.1", "03_dpo/beta_0.5", "04_eval"):
        assert (run_dir / stage / "manifest.json").exists(), stage
    executed = {p.name for p in (run_dir / "notebooks").glob("*.ipynb")}
    assert executed == {
        NOTEBOOKS[0],
        NOTEBOOKS[1],
        "03-DPO_Training.beta_0.1.ipynb",
        "03-DPO_Training.beta_0.5.ipynb",
        NOTEBOOKS[3],
    }
    timings = json.loads((run_dir / "notebooks" / "timings.json").read_text())
    assert set(timings) == executed
    for path in sorted((run_dir / "notebooks").glob("*.ipynb")):
        assert _problems(path) == [], path.name
        text = path.read_text(encoding="utf-8")
        assert "0/4 [00:00" not in text, f"{path.name}: a frozen progress bar was saved in the executed copy"


@pytest.mark.slow
def test_the_lab_command_shows_the_kernels_training_progress_on_its_terminal(smoke_lab):
    """The kernel's DPO loop reports to a file the runner tails: step/total, loss, held-out values, time."""
    run_dir, _, _, terminal = smoke_lab
    lines = [line for line in terminal.splitlines() if "[DPO beta=0.5]" in line]
    assert any("4/4 (100%)" in line and "eval_loss" in line and "已用" in line for line in lines), terminal[-2000:]
    assert any("[generate]" in line for line in terminal.splitlines()), "04's generation progress is not shown"
    assert not (run_dir / "notebooks" / ".progress.jsonl").exists()


@pytest.mark.slow
def test_smoke_lab_keeps_every_beta_and_04_compares_them(smoke_lab):
    run_dir, _, _, _ = smoke_lab
    summary = json.loads((run_dir / "04_eval" / "summary.json").read_text())
    assert summary["betas"] == [0.1, 0.5]
    assert summary["models"] == ["SFT", "DPO β=0.1", "DPO β=0.5"]
    for row in summary["rows"]:  # every measurement exists for every model
        assert {
            "perplexity",
            "sampled_kl",
            "refusal_rate",
            "harmful_compliance_rate",
            "over_refusal_rate",
            "gold_reward",
            "gold_reward_stderr",
            "helpfulness_1_5",
            "harmlessness_1_5",
            "mean_words",
        } <= set(row)
        assert row["refusal_rate"] is None or 0 <= row["refusal_rate"] <= 1
    rates = {(r["judge"], r["model"]): r for r in summary["win_rates"]}
    assert set(rates) == {
        (j, m) for j in ("oracle", "gold judge") for m in ("SFT (another sample)", "DPO β=0.1", "DPO β=0.5")
    }
    for r in rates.values():
        assert (
            r["win_ci_low"] <= r["win_rate"] <= r["win_ci_high"]
            and r["n_judged"] == r["n_requested"]
            and r["errors"] == 0
        )
        assert r["lc_ci_low"] <= r["lc_win_rate"] <= r["lc_ci_high"]
    assert summary["primary_judge"] == "oracle"
    # the methods table: one row per DPO run, accuracy against the TRUE quality next to the labels' accuracy
    assert [r["model"] for r in summary["methods"]] == ["DPO β=0.1", "DPO β=0.5"]
    for r in summary["methods"]:
        assert r["loss_type"] == "sigmoid" and r["round"] == 1 and 0 <= r["true_accuracy"] <= 1
    # 04 wrote each DPO run's win rate, with its interval, into the run's model card (README.md)
    for beta in (0.1, 0.5):
        card = (run_dir / "03_dpo" / f"beta_{beta:g}" / "README.md").read_text(encoding="utf-8")
        oracle = rates[("oracle", f"DPO β={beta:g}")]
        assert f"| SFT（oracle） | {oracle['win_rate']:.1%}（95 % 區間 {oracle['win_ci_low']:.1%}–" in card
    # 03 at beta 0.5 ran the optional on-policy round: pairs sampled and labelled by the oracle (the tiny random
    # model's answers all score alike, so every pair is a tie: counted and said, no second round trained)
    onpolicy = json.loads((run_dir / "onpolicy_pairs" / "beta_0.5.report.json").read_text())
    assert onpolicy["judge"] == "oracle" and onpolicy["prompts"] == 8
    assert onpolicy["pairs"] + onpolicy["ties_dropped"] + onpolicy["empty_dropped"] == 8
    executed_03 = (run_dir / "notebooks" / "03-DPO_Training.beta_0.5.ipynb").read_text(encoding="utf-8")
    assert "on-policy 偏好對：8 個訓練 prompt" in executed_03
    assert (run_dir / "03_dpo" / "round2_beta_0.5").exists() == (onpolicy["pairs"] > 0)
    for row in summary["rows"][1:]:  # the beta table carries each DPO model's ORACLE win rate vs SFT
        assert row["win_ci_low"] <= row["win_rate_vs_sft"] <= row["win_ci_high"]
        assert row["win_rate_vs_sft"] == rates[("oracle", row["model"])]["win_rate"]
        assert 1 <= row["oracle_helpfulness_1_5"] <= 5 and 1 <= row["oracle_harmlessness_1_5"] <= 5
    # the trust tables: every judge against the oracle on the generated pairs (before and after the relevance fix),
    # the bias checks, seen vs held-out topics, the counterfactual prefixes and the course's targets
    assert {(r["judge"], r["model"]) for r in summary["agreement"]} == {
        (j, m)
        for j in ("gold judge", "gold judge (before the relevance fix)")
        for m in ("SFT (another sample)", "DPO β=0.1", "DPO β=0.5")
    }
    checks = {r["judge"]: r for r in summary["judge_checks"]}
    assert set(checks) == {"oracle", "gold judge", "gold judge (before the relevance fix)"}
    assert checks["oracle"]["probes"] == 1.0 and all(r["position_flips"] == 0.0 for r in checks.values())
    assert {(r["model"], r["split"]) for r in summary["splits"]} == {
        (m, s) for m in ("SFT (another sample)", "DPO β=0.1", "DPO β=0.5") for s in ("seen topics", "held-out topics")
    }
    assert {(r["model"], r["split"]) for r in summary["implicit_by_split"]} == {
        (m, s) for m in ("DPO β=0.1", "DPO β=0.5") for s in ("seen topics", "held-out topics")
    }
    # the answer key scores 5 on every prompt, so no model can beat SFT more often than it does
    assert summary["ceiling"][0]["win_rate"] >= max(
        rates[("oracle", m)]["win_rate"] for m in ("DPO β=0.1", "DPO β=0.5")
    )
    from dpo_lab.evaluation.counterfactual import ANY_DETAIL

    per_prefix = [r for r in summary["counterfactual"] if r["prefix"] != ANY_DETAIL]
    assert len(per_prefix) == 3 * 5 and len({r["n"] for r in per_prefix}) == 1
    pooled = [r for r in summary["counterfactual"] if r["prefix"] == ANY_DETAIL]  # every detail, one row per DPO model
    assert [r["model"] for r in pooled] == ["DPO β=0.1", "DPO β=0.5"]
    assert all(r["win_ci_low"] <= r["win_vs_sft"] <= r["win_ci_high"] for r in pooled)
    assert [r["metric"] for r in summary["targets"]] == [
        "win rate vs SFT",
        "log-ratio margin (nats)",
        "helpfulness 1–5",
        "harmlessness 1–5",
        "perplexity",
    ]
    assert summary["decoding"]["do_sample"] is True
    assert {r["model"] for r in summary["elo"]} == {"base", "SFT", "DPO β=0.1", "DPO β=0.5"}
    assert "vs_quality" in summary["gold_judge"] and "vs_quality" in summary["gold_judge_before_fix"]
    for name in (
        "report.md",
        "win_rates.csv",
        "elo.csv",
        "cases.csv",
        "figures/elo.png",
        "figures/reward_kl_frontier.png",
        "targets.csv",
        "agreement.csv",
        "judge_checks.csv",
        "splits.csv",
        "ceiling.csv",
        "implicit_by_split.csv",
        "counterfactual.csv",
    ):
        assert (run_dir / "04_eval" / name).exists(), name
    report = (run_dir / "04_eval" / "report.md").read_text(encoding="utf-8")
    for heading in (
        "## 對 SFT 的 win rate",
        "## 課程目標與 GPT-2 預期 vs 本次結果",
        "## 各 judge 與 oracle 的一致程度（在生成的回答上）",
        "## Judge 的偏誤檢查",
        "## 效果在哪裡成立：見過的主題 vs held-out 主題",
        "## 反事實探針：只改 prompt 裡無關的個人資訊",
    ):
        assert heading in report, heading
    assert report.splitlines()[2].startswith("**結論。** **DPO β=") and "corpus-fact oracle" in report.splitlines()[2]
    assert "以**主題**重抽的 95 % 區間" in report and "人工盲評（72 個生成回答）" in report
    assert not (run_dir / "human_ab").exists() or not any((run_dir / "human_ab").glob("*.json"))  # nobody clicked
    assert (run_dir / "04_eval" / "figures" / "model_comparison.png").stat().st_size > 10_000
    # the masters' own (solved) exercises trained both betas: their dpo_step runs the live reference, so no cache;
    # the second beta left the first beta's run as it was (the cache path is tested on the untouched student notebooks)
    m01 = json.loads((run_dir / "03_dpo" / "beta_0.1" / "manifest.json").read_text())
    m05 = json.loads((run_dir / "03_dpo" / "beta_0.5" / "manifest.json").read_text())
    for m in (m01, m05):
        assert m["metrics"]["implementations"] == {"dpo_loss": "student", "dpo_step": "student"}
        assert m["metrics"]["reference_cache"].startswith("off")
        assert m["metrics"]["initial_eval"]["eval_rewards/accuracies"] == 0.0  # step 0: policy == reference, exactly
    assert json.loads((run_dir / "02_sft" / "manifest.json").read_text())["metrics"]["implementations"] == {
        "sequence_logprobs": "student"
    }
    assert m01["config"]["beta"] == 0.1 and m05["config"]["beta"] == 0.5
    assert m01["created"] <= m05["created"]
    for name in (
        "01_length_distributions.png",
        "02_sft_curves.png",
        "03_dpo_curves_beta_0.1.png",
        "03_dpo_curves_beta_0.5.png",
        "03_overoptimization_beta_0.5.png",
    ):
        assert (run_dir / "figures" / name).exists(), name


# What may legitimately differ between the notebook's kernel and this test process. The gold judge embeds
# every answer with a float32 sentence encoder; its output depends on the process: which texts share a
# padded batch (the embedding cache decides which texts are new) and the number of threads each change
# the reduction order. Measured on this machine for 300 corpus answers: 1.9e-7 (batch composition) and
# 1.6e-7 (1 vs 2 threads) as the largest absolute difference of a unit-norm embedding component, i.e. a
# few float32 ulps. A reward is a 769-term dot product of such features and its statistics (means,
# standard errors) inherit relative errors of about 1e-7..1e-6. So floats are compared at a relative
# 1e-5 (10-100x that), never looser; strings, integers, booleans, model names and the course-rule
# pick must be identical, and so must the win/tie/loss counts (a verdict could only flip if two answers'
# rewards differed by the tie margin to within 1e-6, which the smoke run never comes near).
FLOAT_REL = 1e-5


def _numeric_differences(a, b, where: str) -> list[str]:
    """Every place where two JSON values differ beyond what separate processes legitimately may (above)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys differ: {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _numeric_differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _numeric_differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and not (isinstance(a, bool) or isinstance(b, bool)):
        return [] if a == pytest.approx(b, rel=FLOAT_REL, abs=1e-12) else [f"{where}: {a!r} vs {b!r}"]
    return [] if (a == b and type(a) is type(b)) else [f"{where}: {a!r} vs {b!r}"]


def test_numeric_comparison_allows_float32_noise_only():
    assert not _numeric_differences({"x": [0.3521766399, 1, "a"]}, {"x": [0.3521766885, 1, "a"]}, "rows")
    assert _numeric_differences({"x": 0.35217}, {"x": 0.35227}, "rows")  # a real change: 3e-4 relative
    assert _numeric_differences({"n": 3}, {"n": 4}, "rows") and _numeric_differences({"m": "SFT"}, {"m": "DPO"}, "rows")
    assert _numeric_differences({"a": 1.0}, {"b": 1.0}, "rows")


@pytest.mark.slow
def test_evaluate_command_reproduces_notebook_04(smoke_lab):
    """`python -m dpo_lab evaluate` and notebook 04 call the same functions: on the same run they give the same
    numbers.
    """
    run_dir, _, _, _ = smoke_lab
    from dpo_lab.evaluation.stage import evaluate_run

    notebook = json.loads((run_dir / "04_eval" / "summary.json").read_text())
    result = evaluate_run(run_dir, progress=False, log=lambda *_: None)  # the notebook's defaults are the config's
    cli = json.loads((run_dir / "04_eval" / "summary.json").read_text())
    assert cli["models"] == notebook["models"] and cli["course_rule_pick"] == notebook["course_rule_pick"]
    assert cli["primary_judge"] == notebook["primary_judge"] == "oracle"
    for key in (
        "win_rates",
        "elo",
        "rows",
        "targets",
        "agreement",
        "judge_checks",
        "splits",
        "ceiling",
        "implicit_by_split",
        "counterfactual",
        "methods",
        "gold_judge",
        "gold_judge_before_fix",
    ):
        differences = _numeric_differences(cli[key], notebook[key], key)
        assert not differences, "\n".join(differences[:20])
    assert result["report"] == (run_dir / "04_eval" / "report.md").read_text(encoding="utf-8")


# A measured number typed into prose drifts from what the cells print (0.898 in the text, 0.8906 printed). In the
# notebooks' markdown, a number that only a run can produce must either be printed by a cell or name where it was
# measured: docs/results.md and the commit of that run. Numbers of the method itself (ln 2 = 0.6931, σ(0.5),
# hyperparameters, course targets, data sizes) are not run-dependent and are listed below.
RUN_NUMBER = re.compile(
    r"(?<![\w.])(?<!TRL )(?<!transformers )(?<!torch )(?:\d+\.\d+ nats|\d+\.\d+ ?%|\d\.\d{2,4}(?![\d]))"
)
METHOD_NUMBERS = {"0.6931", "0.693", "0.38", "0.05", "0.25", "0.01", "0.02", "0.95", "0.999", "0.99", "0.125", "0.15"}
METHOD_NUMBERS |= {"0.2560", "1.2308", "0.0011"}  # 03's dpo_loss exercise on its fixed inputs (the self-check's values)
SOURCE = re.compile(r"docs/results\.md[^\n]{0,80}?[0-9a-f]{7}")


def _run_numbers(markdown: str) -> list[str]:
    found = []
    for paragraph in re.split(r"\n\s*\n|\n(?=\s*(?:\d+\.|[-*]) )", markdown):  # list items are paragraphs too
        if SOURCE.search(paragraph):
            continue  # quoted from a named run
        prose = re.sub(r"\$[^$]*\$|`[^`]*`", "", paragraph)  # formulas and code are not measurements
        found += [n for n in RUN_NUMBER.findall(prose) if n.strip() not in METHOD_NUMBERS]
    return found


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_run_dependent_number_is_typed_into_the_prose(name):
    nb = nbformat.read(ROOT / name, as_version=4)
    typed = {i: _run_numbers(c.source) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"}
    typed = {i: numbers for i, numbers in typed.items() if numbers}
    assert not typed, (
        f"{name}: numbers in markdown cells {typed}: print them from a cell, or cite docs/results.md + commit"
    )


def test_the_typed_number_check_catches_a_measured_number_and_accepts_a_cited_one():
    assert _run_numbers("held-out accuracy 0.898，win rate 57.5 %，margin 6.13 nats") == [
        "0.898",
        "57.5 %",
        "6.13 nats",
    ]
    assert _run_numbers("（docs/results.md，commit 9576fff）：win rate 57.5 %") == []
    assert _run_numbers("1. docs/results.md（commit 9576fff）：57.5 %\n2. KL 2.49") == ["2.49"]  # one citation per item
    assert _run_numbers("第 0 步 loss = 0.6931 = ln 2；公式 $\\sigma(0.5)=0.62$；`lr = 5e-05`") == []
