"""The whole training recipe of a preset in one call: Stage 1 -> 2 -> 3 -> low-shot fine-tune.

Each step writes into ``<output_dir>/<kind>`` and starts from the previous step's best model.
A finished step leaves ``recipe_done.json`` and is skipped when the recipe runs again; an
interrupted one continues from its latest checkpoint with ``resume=True``, or starts again
from step 0 when it was interrupted before its first checkpoint. ``resume`` refuses a folder
holding no step's run, and a step (finished or not) started with other settings than its
config now gives, as a single-stage ``--resume`` does. The data each step
trained and validated on is written to ``<output_dir>/<kind>/data_split.json``, so a model's
evaluation images can be checked to be unseen.

The recipe's config is a preset name or a YAML/JSON file (:func:`recipe_sections`), read as
``sem train pretrain/finetune --config`` read theirs: it may start from a preset
(``preset: cpu-small``) and its keys apply to every step, except those under a step's name
(``stage1:``, ``stage2:``, ``stage3:``, ``finetune:``), which apply to that step only (merged
over the others). The recipe chains the steps itself: ``run.output_dir``, and ``init_from`` /
``teacher_from`` outside ``stage1:``, are refused in the file. Every step's config is
validated before the first step trains.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sem_physics.atomic import atomic_write_text

from .datasplit import SPLIT_FILE

if TYPE_CHECKING:  # at run time imported inside the functions that use it
    from .runfolder import RunFolder

__all__ = [
    "DENSE_KINDS",
    "RECIPE_KINDS",
    "SPLIT_FILE",
    "check_recipe_resume",
    "recipe_configs",
    "recipe_name",
    "recipe_sections",
    "run_recipe",
    "step_line",
]

#: The steps of a recipe, in order.
RECIPE_KINDS = ("stage1", "stage2", "stage3", "finetune")
#: The dense ablation (no Mixture-of-Experts): Stage 2 left out, Stage 3 from Stage 1.
DENSE_KINDS = ("stage1", "stage3", "finetune")
DONE_FILE = "recipe_done.json"
#: How a recipe goes on when ``--resume`` refuses a step's changed settings, and the new run
#: a refusal of its changed data names (a recipe starts each step from the previous one: it
#: has no ``--init-from`` of its own, which a single stage's refusals name).
RECIPE_RESUME_HINT = (
    "to resume, give the recipe the settings its steps started with; to train with the new "
    "ones (more epochs included), run the recipe into another --output-dir"
)
_NEW_RECIPE_RUN = "sem train recipe ... --output-dir NEW_FOLDER"


def _runner(kind: str) -> Callable[..., Any]:
    if kind == "finetune":
        from .finetune import run_finetune

        return run_finetune
    from .stages import run_pretrain_stage

    stage = int(kind[-1])
    return lambda cfg, resume: run_pretrain_stage(stage, cfg, resume=resume)


def recipe_name(config: str | Path) -> str:
    """What names a recipe (its default folder ``runs/<name>``): the preset, or the file's
    name without its extension."""
    from .config import PRESETS

    return config if isinstance(config, str) and config in PRESETS else Path(config).stem


def recipe_sections(config: str | Path, kinds: tuple[str, ...] = RECIPE_KINDS) -> dict[str, Any]:
    """Step -> its config source: the preset name itself, or the mapping a YAML/JSON file gives
    that step (the keys for every step with the step's own section merged over them).

    One-line :class:`~sem_train.config.ConfigError` (a ValueError) for a name that is neither a
    preset nor a file, a malformed file, a key given twice, a step section that is no mapping,
    a section for every step that is no mapping where a step's section gives one to merge over
    it (``run: 5`` and ``stage1: {run: {...}}``), or a key the recipe sets itself
    (``run.output_dir``; ``init_from``/``teacher_from`` outside ``stage1:``)."""
    return _read_recipe(config, kinds)[0]


def _read_recipe(
    config: str | Path, kinds: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, dict[tuple[str, ...], int]]]:
    """:func:`recipe_sections`, and for each step the file's line of every key path of its
    section (the step's own keys over those for every step; none for a preset)."""
    from .config import PRESETS, ConfigError, read_config_file
    from .yaml_strict import duplicate_key

    if isinstance(config, str) and config in PRESETS:
        return dict.fromkeys(kinds, config), {kind: {} for kind in kinds}
    path = Path(config)
    if not path.exists():
        raise ConfigError(
            f"--config {str(config)!r}: choose a preset, one of {sorted(PRESETS)}, or give a "
            "YAML/JSON file (no such file)"
        )
    found, lines = read_config_file(path)
    duplicate = duplicate_key(path.read_text(encoding="utf-8"), path) if found else None
    if duplicate:
        raise ConfigError(f"invalid recipe config: {duplicate}")
    data = dict(found or {})
    steps = {k: data.pop(k) for k in RECIPE_KINDS if k in data}
    for kind, section in steps.items():
        if not isinstance(section, dict):
            raise ConfigError(
                f"{path}: `{kind}:` must hold that step's settings (a mapping), got "
                f"{type(section).__name__}"
            )

    def refuse(where: str, what: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {where}{what} is set by the recipe ({why}); leave it out")

    for where, section in [("", data), *((f"{k}.", v) for k, v in steps.items())]:
        if isinstance(section.get("run"), dict) and "output_dir" in section["run"]:
            raise refuse(where, "run.output_dir", "<--output-dir>/<step>: give --output-dir")
        for key in ("init_from", "teacher_from"):
            if key in section and where != "stage1.":
                raise refuse(where, key, "each step starts from the previous one")

    def merged(
        common: dict[str, Any], step: dict[str, Any], kind: str, *keys: str
    ) -> dict[str, Any]:
        """Step ``kind``'s ``step`` merged over ``common``; a mapping of ``step`` over a value
        of ``common`` that is none is refused (replacing it would hide the file's invalid
        value, which a single-stage config has refused)."""
        out = dict(common)
        for key, value in step.items():
            if isinstance(value, dict) and key in out:
                if not isinstance(out[key], dict):
                    name = ".".join((*keys, key))
                    line = lines.get((*keys, key))
                    raise ConfigError(
                        f"{path}{'' if line is None else f', line {line}'}: {name} must be a "
                        f"mapping of settings ({kind}.{name} is merged into it), got "
                        f"{type(out[key]).__name__}"
                    )
                value = merged(out[key], value, kind, *keys, key)
            out[key] = value
        return out

    common = {key: line for key, line in lines.items() if key[0] not in RECIPE_KINDS}
    step_lines = {
        kind: common | {key[1:]: line for key, line in lines.items() if key[0] == kind}
        for kind in kinds
    }
    return {kind: merged(data, steps.get(kind, {}), kind) for kind in kinds}, step_lines


def recipe_configs(
    config: str | Path,
    *,
    data_root: Path | None,
    output_dir: Path,
    device: str | None = None,
    kinds: tuple[str, ...] = RECIPE_KINDS,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Step -> its validated config (every step's, before any trains): ``config``'s section
    for the step (:func:`recipe_sections`), ``overrides`` of that step, then the recipe's own
    settings (data folder, ``<output_dir>/<kind>``, device, the previous step as ``init_from``,
    Stage 1 as Stage 3's teacher). Errors name the file (with the line) or the preset, and
    the step."""
    from .config import _deep_merge, load_config

    output_dir = Path(output_dir)
    sections, lines = _read_recipe(config, kinds)
    configs: dict[str, Any] = {}
    previous: Path | None = None
    for kind in kinds:
        source = "preset" if isinstance(sections[kind], str) else "--config"
        label = f"{source} {config}, recipe step {kind}"
        # the previous step from the start: a file without `preset:` gives no init_from (and
        # may not), which Stages 2-3 and the fine-tune need to be valid at all
        chained = {} if previous is None else {"init_from": previous}
        first = load_config(sections[kind], kind, chained, lines=lines[kind], label=label)
        data = _deep_merge(first.model_dump(), (overrides or {}).get(kind, {}))
        if data_root is not None:
            data["data"]["root"] = data_root
        data["run"]["output_dir"] = output_dir / kind
        if device is not None:
            data["run"]["device"] = device
        if "init_from" in data and previous is not None:
            data["init_from"] = previous
        if kind == "stage3":
            data["teacher_from"] = output_dir / "stage1"
        configs[kind] = load_config(data, kind, label=label)
        previous = output_dir / kind
    return configs


def step_line(kind: str, record: dict[str, Any]) -> str:
    """What a recipe says when a step ends (as ``sem train pretrain`` says it): how long it
    took, whether ``run.max_steps`` stopped it and at which step, and its best validation
    loss (``n/a`` when it never validated)."""
    best = record["best_val_loss"]
    how = "finished" if not record["stopped_at_max_steps"] else "stopped early by run.max_steps"
    return (
        f"{kind}: {how} at step {record['global_step']} in {record['seconds']:.0f} s; best val "
        f"loss {'n/a' if best is None else f'{best:.5g}'}"
    )


def _step_started(folder: RunFolder) -> bool:
    """Whether a step's :class:`~sem_train.runfolder.RunFolder` holds its run: a checkpoint,
    a started run (``run_info.json``) or the done marker. A step folder holding only what a
    run killed while starting leaves (its lock file, write temporaries) holds none."""
    return folder.has_checkpoint or folder.has_started_run or (folder.run_dir / DONE_FILE).is_file()


def check_recipe_resume(output_dir: Path, kinds: tuple[str, ...], configs: dict[str, Any]) -> None:
    """Refuse ``--resume`` when no step of the recipe in ``output_dir`` has started (a mistyped
    folder), or when a step with a checkpoint, finished or not, started with settings other than
    its config now gives (the comparison of a single-stage resume,
    :meth:`~sem_train.runfolder.RunFolder.check_resume`, with the recipe's way on,
    :data:`RECIPE_RESUME_HINT`, in place of the single-stage ``--init-from``)."""
    from .preflight import run_record
    from .runfolder import RUN_INFO_NAME, RunFolder
    from .runinfo import ResumeConfigError

    folders = {kind: RunFolder(output_dir / kind) for kind in kinds}
    if not any(_step_started(f) for f in folders.values()):
        raise FileNotFoundError(
            f"--resume: no checkpoint in {output_dir} (no step folder {', '.join(kinds)} holds "
            f"checkpoints/latest.json or {RUN_INFO_NAME}); start without --resume in an empty "
            "output folder"
        )
    for kind, folder in folders.items():
        if not folder.has_checkpoint:  # none yet: the step starts again from step 0
            continue
        try:
            folder.check_resume(run_record(kind, configs[kind]), RECIPE_RESUME_HINT)
        except ResumeConfigError as err:
            raise ResumeConfigError(
                f"--resume (recipe step {kind}): {str(err).removeprefix('--resume: ')}"
            ) from None


def run_recipe(
    preset_name: str | Path,
    *,
    data_root: Path | None,
    output_dir: Path,
    resume: bool = False,
    device: str | None = None,
    kinds: tuple[str, ...] = RECIPE_KINDS,
    overrides: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``kinds`` of ``preset_name`` (a preset, or a YAML/JSON file: :func:`recipe_sections`)
    in order; returns {kind: summary}.

    ``data_root`` replaces every step's ``data.root`` (the generated images of the preset are
    added to it); ``overrides`` maps a kind to fields merged into its config (e.g. a smaller
    budget). Every step's config is validated before the first step runs
    (:func:`recipe_configs`). Without ``resume`` the output folder must not hold a recipe yet;
    with it, it must, started with the settings it has now (:func:`check_recipe_resume`).
    """
    from .datasplit import check_resume_split, split_record
    from .preflight import check_inputs
    from .ranks import world_size
    from .runfolder import RunFolder
    from .runinfo import check_resume_world_size

    output_dir = Path(output_dir)
    configs = recipe_configs(
        preset_name,
        data_root=data_root,
        output_dir=output_dir,
        device=device,
        kinds=kinds,
        overrides=overrides,
    )
    # a step folder without a run in it (a recipe killed while its first step started) is no
    # recipe run: a fresh start takes it, as --resume, which needs a started step, refuses it
    if not resume and any(_step_started(RunFolder(output_dir / k)) for k in kinds):
        raise FileExistsError(
            f"{output_dir} already holds a recipe run; pass --resume to continue it, or choose "
            "another --output-dir"
        )
    if resume:
        check_recipe_resume(output_dir, kinds, configs)
    summary: dict[str, Any] = {}
    for kind in kinds:
        out = output_dir / kind
        cfg = configs[kind]
        done = out / DONE_FILE
        if done.is_file():
            summary[kind] = json.loads(done.read_text(encoding="utf-8"))
            done_how = (
                "stopped by run.max_steps"
                if summary[kind].get("stopped_at_max_steps")
                else "finished"
            )
            log(f"{kind}: already {done_how} ({summary[kind]['seconds']:.0f} s), skipped")
            continue
        folder = RunFolder(out)
        again = resume and (folder.has_checkpoint or folder.has_started_run)
        check_inputs(kind, cfg)  # bad data is refused before the training code is imported
        if again and folder.has_checkpoint:  # its processes and data, before it says it resumes
            check_resume_world_size(out, world_size())
            check_resume_split(out, split_record(kind, cfg), _NEW_RECIPE_RUN)
        if again and not folder.has_checkpoint:
            log(f"{kind}: no checkpoint yet, starting again from step 0 into {out}")
        else:
            log(f"{kind}: {'resuming' if again else 'training'} into {out}")
        t0 = time.perf_counter()
        result = _runner(kind)(cfg, resume=again)
        record = {
            "kind": kind,
            "seconds": time.perf_counter() - t0,
            "global_step": result.global_step,
            "stopped_at_max_steps": result.stopped_early,
            "best_val_loss": result.best_loss,
            "first_train_loss": result.first_train_loss,
            "last_train_loss": result.last_train_loss,
            "best_dir": None if result.best_dir is None else str(result.best_dir),
        }
        atomic_write_text(done, json.dumps(record, indent=2))
        summary[kind] = record
        log(step_line(kind, record))
    return summary
