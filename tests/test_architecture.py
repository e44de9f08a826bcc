"""The tree keeps the layout docs/architecture.md describes: stages import only what they may."""

from __future__ import annotations

from pathlib import Path

from segue.layout import STAGES, forbidden_imports, readme_rule, stage_imports
from segue.reference_docs import with_module_map

REPO = Path(__file__).resolve().parents[1]


def test_stages_import_only_what_the_rules_allow():
    assert forbidden_imports(REPO) == []
    # The rules are not vacuous: the stages do reach each other, and the ground floor reaches none.
    edges = {(stage, target) for _, stage, _, target in stage_imports(REPO)}
    assert ("serving", "indexing") in edges and not any(stage == "ground" for stage, _ in edges)


def test_the_module_map_and_the_stage_readmes_match_the_tree():
    architecture = (REPO / "docs" / "architecture.md").read_text()
    assert with_module_map(architecture, REPO) == architecture, \
        "docs/architecture.md's module map is out of date: run `segue config docs --write docs`"
    for stage in STAGES:
        if stage.folder != "segue":
            assert readme_rule(stage) in (REPO / stage.folder / "README.md").read_text(), stage.folder
