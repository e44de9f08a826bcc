"""The source tree's stages, the import name of each, and which stages each may import.

`docs/architecture.md` renders this as its module map (`segue config docs --write docs`), and a test
checks every `from segue...` import of the tree against `may_import`, so the rules stay true.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GROUND = "ground"  # the modules of `segue/` every stage may use
ROOF = "roof"  # the modules of `segue/` that drive the stages: command line, demo


@dataclass(frozen=True)
class Stage:
    name: str
    folder: str
    package: str
    role: str
    may_import: tuple[str, ...]  # other stages' names; the ground floor is always allowed


# `segue/` holds two layers: the ground floor below every stage and the roof above them all.
ROOF_MODULES = ("cli.py", "cli_failures.py", "demo.py", "sample_world.py", "reference_docs.py", "layout.py")
STAGES = (
    Stage(GROUND, "segue", "segue", "settings, logs, the shared vocabulary, the challenge metrics, ports", ()),
    Stage("batch", "batch", "segue.batch", "data in: MPD reading, Spark jobs, data contracts", ("features",)),
    Stage("feature_repo", "feature_repo", "segue.feature_repo", "the Feast repo `feast apply` reads", ()),
    # materialize re-checks the batch tables' contracts; the store seeds an empty neighbour table
    Stage("features", "features", "segue.features", "opening and reading the Feast store",
          ("batch", "feature_repo")),
    Stage("training", "training", "segue.training", "the two towers: data, model, export, evaluation",
          ("features", "ranking")),
    Stage("ranking", "ranking", "segue.ranking", "candidate sources, their merge, the DCN ranker",
          ("features", "training")),  # the ranker is fitted on the towers' candidates
    Stage("indexing", "indexing", "segue.indexing", "Milvus: collections, rebuild, upserts, search",
          ("features", "training")),
    Stage("streaming", "streaming", "segue.streaming", "Kafka events to Feast and Milvus: daemon and Beam",
          ("features", "indexing", "training")),
    Stage("serving", "serving", "segue.serving", "the API: features, towers, search, ranking, filters",
          ("features", "indexing", "ranking", "training")),
    Stage(ROOF, "segue", "segue", "the command line and the demo: they drive every stage",
          ("batch", "features", "training", "ranking", "indexing", "streaming", "serving")),
)


def stage_of_module(module: str) -> str | None:
    """The stage an import name belongs to (`segue.indexing.rebuild` -> indexing)."""
    parts = module.split(".")
    if parts[0] != "segue":
        return None
    for stage in STAGES[1:-1]:
        if module == stage.package or module.startswith(stage.package + "."):
            return stage.name
    return ROOF if len(parts) > 1 and f"{parts[1]}.py" in ROOF_MODULES else GROUND


def stage_files(repo: Path, stage: Stage) -> list[Path]:
    folder = repo / stage.folder
    if stage.folder != "segue":
        return sorted(p for p in folder.rglob("*.py") if "data" not in p.relative_to(folder).parts)
    files = sorted(folder.glob("*.py"))
    return [p for p in files if (p.name in ROOF_MODULES) == (stage.name == ROOF)]


def stage_imports(repo: Path) -> Iterator[tuple[Path, str, str, str]]:
    """(file, its stage, the module it imports, that module's stage) for every cross-stage import."""
    for stage in STAGES:
        for path in stage_files(repo, stage):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    target = stage_of_module(node.module)
                    if target is not None and target != stage.name:
                        yield path, stage.name, node.module, target


def forbidden_imports(repo: Path) -> list[str]:
    """`file: stage imports module (stage)` for each import the rules do not allow."""
    rules = {s.name: set(s.may_import) | {GROUND} for s in STAGES}
    return [f"{path.relative_to(repo)}: {stage} imports {module} ({target})"
            for path, stage, module, target in stage_imports(repo) if target not in rules[stage]]


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def module_map(repo: Path) -> str:
    """The markdown module map: per stage, what it may import, then each module and its summary."""
    lines = ["| stage | folder | import name | may import (besides the ground floor) |", "|---|---|---|---|"]
    for s in STAGES:
        allowed = ", ".join(s.may_import) or "nothing"
        lines.append(f"| {s.name}: {s.role} | `{s.folder}/` | `{s.package}` | {allowed} |")
    for s in STAGES:
        lines += ["", f"### {s.name} (`{s.folder}/`)", "", "| module | what it is |", "|---|---|"]
        for path in stage_files(repo, s):
            if path.name == "__init__.py" and not _summary(path):
                continue
            lines.append(f"| `{path.relative_to(repo)}` | {_summary(path)} |")
    return "\n".join(lines)


def readme_rule(stage: Stage) -> str:
    """The line each stage README carries, saying what the stage may import."""
    others = ", ".join(f"`{s.package}`" for s in STAGES if s.name in stage.may_import)
    return (f"**May import:** the ground floor (`segue.settings`, `segue.vocabulary`, ...)"
            f"{', and ' + others if others else ' only'}; "
            "see [the module map](../docs/architecture.md#module-map-and-import-rules).")
