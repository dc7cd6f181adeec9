"""`facesmith train run|status|options`: thin commands over train.loop, train.status and train.config.

The option flags of `train run` are generated from the declarations in train.config, so each option's
type, default, range and help live in exactly one place.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from curate.errors import FacesmithError, Interrupted
from facesmith.console import FormatOption, fail, quiet_framework_startup, warn
from facesmith.option_flags import given, render_option_table, with_option_flags
from facesmith.render import OutputFormat, render_summary
from merge.quality import check_option_specs
from train.config import load_toml, option_specs

train_app = typer.Typer(
    help="Train SAEHD (Keras 3 on PyTorch, JAX or TensorFlow) on curated facesets: RW -> LRD -> GAN, with "
         "history, previews, safe checkpoints, plateau advice, collapse rollback and a VRAM plan.",
    no_args_is_help=True,
)

class _StopFlag:
    """Ctrl-C asks the loop to save and stop after the current iteration; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _options_from(config_file: Optional[Path], flags: dict[str, Any]) -> dict[str, Any]:
    values = load_toml(config_file) if config_file is not None else {}
    values.update(given(flags))
    return values


def register(app: typer.Typer) -> None:
    """Add the `train` command group to the root app."""
    app.add_typer(train_app, name="train")

    @train_app.command("run")
    @with_option_flags(option_specs(), "Training options", "Model structure (fixed when the model is created)",
                       extra=((check_option_specs(), "Merge-check options (kept by the model)"),))
    def run(
        model_dir: Annotated[Path, typer.Option("--model-dir", help="Model folder: created on the first run, "
                                                "resumed from its newest checkpoint afterwards.")],
        src: Annotated[Optional[Path], typer.Option("--src", help="Source faceset (.duckdb from 'curate "
                                                    "scan'): the face to learn. Needed to create a model.")] = None,
        dst: Annotated[Optional[Path], typer.Option("--dst", help="Destination faceset: the faces that get "
                                                    "replaced. Needed to create a model.")] = None,
        config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of options (top-level keys or "
                                                       "a 'train' table); flags override it.")] = None,
        iterations: Annotated[Optional[int], typer.Option("--iterations", min=1, help="Train this many "
                                                          "iterations in this session, then save and stop.")] = None,
        check_every: Annotated[int, typer.Option("--check-every", min=0, help="Run a merge check every N "
                                                 "iterations: merge held-out dst frames, score them, flag "
                                                 "overtraining and keep the best checkpoint (0: off).")] = 2000,
        exclude_hardest: Annotated[Optional[int], typer.Option(
            "--exclude-hardest", min=1, show_default=False,
            help="Before this session, exclude the K src faces the model learns worst (highest running "
                 "per-face loss at its newest checkpoint), as decisions in the src faceset (who: 'train "
                 "--exclude-hardest', why: the loss): 'curate review' shows them and undoes one with a key.")] = None,
        output: FormatOption = OutputFormat.table,
        **options: Any,
    ) -> None:
        """Train (or resume) a SAEHD model; Ctrl-C saves and stops cleanly."""
        from merge.quality import resolve_check_settings
        from train.backend import quiet_framework_logs
        from train.model_folder import plan_session

        check_names = {spec.name for spec in check_option_specs()}
        check_options = {name: value for name, value in given(options).items() if name in check_names}
        options = {name: value for name, value in options.items() if name not in check_names}
        try:
            values = _options_from(config, options)
            resolve_check_settings(check_options)
            # Every option, the structure and the facesets are checked here, before a framework loads.
            plan = plan_session(model_dir, values, src, dst)
            excluded = []
            if exclude_hardest is not None:
                from train.face_losses import exclude_hardest as exclude

                excluded = exclude(model_dir, plan.src, exclude_hardest, plan.config.use_selection)
        except (FacesmithError, OSError) as error:
            fail(error)
        warn([f"left out from now on: {face.face_id}, {face.why}" for face in excluded], output)
        quiet_framework_logs()  # the frameworks' C++ start-up chatter is not for users; errors still show
        try:
            with quiet_framework_startup():
                from train.loop import close_session, open_session, run_training

                session = open_session(model_dir, values, src, dst)
        except (FacesmithError, OSError) as error:
            fail(error)
        warn(session.notes, output)
        end = session.iteration + iterations if iterations else (session.config.target_iter or None)
        stop = _StopFlag()
        try:
            # From here Ctrl-C asks for a clean stop: caught before the first line that says training began.
            with stop:
                if output is OutputFormat.table:
                    Console(stderr=True, soft_wrap=True).print(
                        f"training on {session.device.description}: {session.config.archi} "
                        f"{session.config.resolution} px, phase {session.config.phase}, "
                        f"{len(session.src_faces)} src / {len(session.dst_faces)} dst faces, "
                        f"from iteration {session.iteration}", highlight=False)
                evaluators = ()
                if check_every:
                    from merge.checks import MergeChecker, MergeCheckError, model_check_settings

                    try:
                        settings = model_check_settings(session.history, check_options)
                        evaluators = (MergeChecker(session, every=check_every, settings=settings),)
                    except MergeCheckError as error:
                        warn([f"merge checks off: {error}"], output)
                with _iteration_display(output, end) as show:
                    outcome = run_training(session, max_iterations=iterations, evaluators=evaluators,
                                           should_stop=lambda: stop.requested, on_iteration=show,
                                           on_evaluation=_evaluation_lines(output))
        except KeyboardInterrupt:  # a second Ctrl-C: run_training saved on its way out
            fail(Interrupted(f"training interrupted at iteration {session.iteration}: saved in {model_dir}; "
                             "run the same command again to resume"))
        except FacesmithError as error:
            fail(error)
        finally:
            close_session(session)
        summary = {"model_dir": str(model_dir), "iteration": outcome.iteration, "phase": outcome.phase,
                   "reason": outcome.reason, "iterations_run": outcome.iterations_run,
                   "seconds": round(outcome.seconds, 2), "rollbacks": outcome.rollbacks,
                   "src_loss": outcome.last_src_loss, "dst_loss": outcome.last_dst_loss,
                   "device": session.device.description,
                   "advice": outcome.plateau.advice if outcome.plateau else None,
                   "notes": session.notes, "excluded_hardest": [face.to_dict() for face in excluded]}
        render_summary(summary, output, f"train {model_dir.name}", [
            ("iteration", f"{outcome.iteration} ({outcome.iterations_run} this session, {outcome.reason})"),
            ("phase", outcome.phase),
            (f"loss src / dst at {outcome.iteration}", f"{outcome.last_src_loss:.4f} / {outcome.last_dst_loss:.4f}"),
            ("time", f"{outcome.seconds:.1f} s"),
            ("rollbacks", str(outcome.rollbacks)),
            ("advice", summary["advice"] or "-"),
            ("device", session.device.description),
        ])
        if stop.requested and outcome.reason == "stopped":
            fail(Interrupted(f"training stopped by Ctrl-C at iteration {outcome.iteration}: saved in {model_dir}; "
                             "run the same command again to resume"))

    @train_app.command("status")
    def status(
        model_dir: Annotated[Path, typer.Option("--model-dir", help="Model folder.")],
        output: FormatOption = OutputFormat.table,
    ) -> None:
        """Phase, iterations, ms/iteration, loss trend and what to do next (never imports TensorFlow)."""
        from train.status import RECENT_ITERATIONS, training_status

        try:
            state = training_status(model_dir)
        except FacesmithError as error:
            fail(error)

        def number(value: float | None, digits: int = 4) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        trend = "-" if state.trend_per_decade is None else f"{state.trend_per_decade * 100:+.1f}% per 10x iterations"
        render_summary(state.to_dict(), output, f"model {model_dir}", [
            ("phase", state.phase),
            ("iteration", str(state.iteration)),
            ("ms / iteration", number(state.ms_per_iteration, 1)),
            (f"loss src / dst at {state.iteration}", f"{number(state.last_src_loss)} / {number(state.last_dst_loss)}"),
            (f"mean of the last {RECENT_ITERATIONS}", f"{number(state.src_loss)} / {number(state.dst_loss)}"),
            ("loss trend", trend),
            ("advice", state.advice),
            ("checkpoints", ", ".join(str(step) for step in state.checkpoints) or "-"),
            ("rollbacks", "; ".join(state.rollbacks) or "none"),
            ("best iteration", "-" if state.best_iteration is None else str(state.best_iteration)),
            ("warning", state.flag or "none"),
            ("model", f"{state.architecture}, {state.resolution} px, {state.sessions} session(s)"),
            ("last device", state.device or "-"),
        ])

    @train_app.command("plan")
    @with_option_flags(option_specs(), "Training options", "Model structure (fixed when the model is created)")
    def plan(
        model_dir: Annotated[Optional[Path], typer.Option("--model-dir", help="Plan an existing model folder "
                                                          "(its structure and options); without it, the "
                                                          "options given.")] = None,
        config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of options; flags override "
                                                       "it.")] = None,
        memory_gib: Annotated[Optional[float], typer.Option("--memory-gib", min=0.1, help="GPU memory to plan "
                                                             "for, in GiB: reports the largest batch that fits "
                                                             "(e.g. 24 for an RTX 4090, 139 for an H200).")] = None,
        output: FormatOption = OutputFormat.table,
        **options: Any,
    ) -> None:
        """Estimate GPU memory (weights, gradients, optimiser state, activations) and FLOPs of a training
        step before training, and the largest batch that fits a given memory. Imports no framework."""
        from train.config import resolve_config
        from train.model_folder import open_model_folder, merge_requested
        from train.plan import GIB, describe, plan_memory

        try:
            values = _options_from(config, options)
            folder = open_model_folder(model_dir) if model_dir is not None else None
            stored = folder.requested if folder is not None and folder.exists else {}
            structure = folder.structure if folder is not None and folder.exists else None
            resolved, notes = resolve_config(merge_requested(stored, values), structure)
            memory = int(memory_gib * GIB) if memory_gib is not None else None
            result = plan_memory(resolved, backend=resolved.backend, memory_available=memory)
        except (FacesmithError, OSError) as error:
            fail(error)
        warn(notes, output)
        render_summary(result.to_dict(), output, "training memory plan", describe(result))

    @train_app.command("options")
    def options(output: FormatOption = OutputFormat.table) -> None:
        """Every training option: type, default, allowed values, whether it is fixed at creation, help."""
        render_option_table(option_specs(), output, "SAEHD options (set in a TOML file or as --flags)")


def progress_line(phase: str, iteration: int, recent_ms: list[float], src_loss: float, dst_loss: float,
                  end: int | None) -> str:
    """The live line: phase, iteration (of the end), median ms/iteration of the recent ones, ETA, losses."""
    import statistics

    ms = statistics.median(recent_ms) if recent_ms else float("nan")
    text = f"[{phase}] iteration {iteration}" + (f"/{end}" if end else "") + f"  {ms:.0f} ms/it"
    if end and end > iteration and ms == ms:
        seconds = int(round((end - iteration) * ms / 1000.0))
        hours, rest = divmod(seconds, 3600)
        text += f"  ETA {hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"  ETA {rest // 60}:{rest % 60:02d}"
    return text + f"  src {src_loss:.4f}  dst {dst_loss:.4f}"


def _evaluation_lines(output: OutputFormat):
    """One stderr line per merge check (iteration, score, change since best, verdict) beside a table;
    JSON and CSV runs stay quiet (the checks are in merge_checks). Printed above a live status line."""
    if output is not OutputFormat.table:
        return None
    console = Console(stderr=True, soft_wrap=True, highlight=False)

    def announce(name: str, iteration: int, outcome) -> None:
        console.print(f"{name} {iteration}: {outcome.summary}", style="bold red" if outcome.flag else None,
                      markup=False)
    return announce


def _iteration_display(output: OutputFormat, end: int | None = None):
    """A context giving an on_iteration callback that shows a live status line on a terminal."""
    from collections import deque
    from contextlib import contextmanager

    from facesmith.console import wants_progress

    @contextmanager
    def display():
        if not wants_progress(output):
            yield None
            return
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        recent: deque[float] = deque(maxlen=50)
        with Live(console=console, transient=True, refresh_per_second=4) as live:
            def show(session, row) -> None:
                recent.append(row.ms)
                live.update(progress_line(session.config.phase, row.iteration, list(recent), row.src_loss,
                                          row.dst_loss, end))
            yield show
    return display()
